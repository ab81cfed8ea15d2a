"""The gateway's seams to the outside, chosen once: the enclave link, its monitor, the per-client
limiter and the clock (STYLE.md, "one seam per external thing").

``create_app`` takes each of them; whatever is not handed in is built here from the settings, the
same way the CLI builds them, so a test swaps one seam (a scripted link, a fake clock) and keeps
the real rest.
"""

from __future__ import annotations

from dataclasses import dataclass

from nitro_llm.gateway.clock import Clock, system_clock
from nitro_llm.gateway.credentials import CredentialsSource
from nitro_llm.gateway.enclave_link import EnclaveLink, TransportLink
from nitro_llm.gateway.enclave_monitor import EnclaveMonitor
from nitro_llm.gateway.ratelimit import Limiter
from nitro_llm.gateway.settings import GatewaySettings


@dataclass(frozen=True)
class Seams:
    link: EnclaveLink
    monitor: EnclaveMonitor
    limiter: Limiter
    clock: Clock


def build_seams(
    settings: GatewaySettings,
    *,
    credentials: CredentialsSource | None = None,
    link: EnclaveLink | None = None,
    limiter: Limiter | None = None,
    clock: Clock | None = None,
    monitor: EnclaveMonitor | None = None,
) -> Seams:
    """The given seams, and the defaults for the others: the link over ``settings.enclave``, a
    monitor of that link (handing ``credentials`` to a restarted enclave), a limiter and the
    monotonic clock."""
    clock = clock or system_clock
    link = link or TransportLink(settings)
    return Seams(
        link=link,
        monitor=monitor or EnclaveMonitor(link, credentials=credentials, clock=clock),
        limiter=limiter or Limiter(clock=clock),
        clock=clock,
    )
