"""What ``GET /v1/verification`` and the web chat's badge say: exactly what was checked, by whom, when.

Four states, never more reassuring than the facts:

- ``verified``: this machine verified the enclave's attestation document (attested protocol): the
  badge says when, and what was checked ("verified here at 14:02:11 UTC: PCR0-2 pinned, nonce
  fresh, ... root ...").
- ``kms``: nothing was verified on this machine (kms protocol); AWS KMS releases the data key only
  to an enclave whose PCRs match the key policy. The badge says so, and ``verified`` is None.
- ``blocked``: this machine refused the enclave; nothing is sent (``verified`` False).
- ``unreachable``: the gateway or its enclave does not answer (the stack is down): whatever was
  verified before says nothing about what will answer next, so ``verified`` is None and there is no
  current ``verified_at`` (nor ``valid_until``): the last verification is ``last_verified_at``, what
  it checked stays listed (``checks``, ``pcrs``), and ``checked_at`` says when the stack was found
  down. A restarted stack is verified anew before anything is sent to it.

Every panel carries ``checked_at``: when it was made, so "unreachable" or "verified" is as of then.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

VERIFIED, KMS, BLOCKED, UNREACHABLE = "verified", "kms", "blocked", "unreachable"
KMS_BADGE = "not verified on this machine: the KMS key policy checks the enclave's PCRs"
UNREACHABLE_BADGE = "enclave unreachable"
BLOCKED_BADGE = "not verified: blocked, nothing will be sent"


def verification_panel(
    facts: Mapping[str, Any], unreachable: str | None = None, *, now: dt.datetime | None = None
) -> dict[str, Any]:
    """``facts``: a backend's ``describe()``; ``unreachable``: its ``probe()`` (None: it answers).
    Adds ``state``, ``badge``, ``reachable``, ``unreachable_reason`` and ``checked_at`` (``now``)."""
    out = dict(facts)
    out["checked_at"] = (now or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds")
    verified = out.get("verified")
    if verified is not True and verified is not None:
        verified = False  # anything but a plain True or None is not a pass
    if verified is None and out.get("failure_reason") and not unreachable:
        unreachable = str(out["failure_reason"])  # verification found nobody to verify
    out["reachable"] = unreachable is None
    out["unreachable_reason"] = unreachable
    if verified is False:
        out.update(state=BLOCKED, verified=False, badge=BLOCKED_BADGE)
    elif unreachable is not None:
        if verified is True:  # a session verified earlier: history now, not a verification of what answers
            out["last_verified_at"] = out.get("verified_at")
        out.update(
            state=UNREACHABLE, verified=None, verified_at=None, valid_until=None, badge=UNREACHABLE_BADGE
        )
    elif verified is True:
        out.update(state=VERIFIED, badge=_verified_badge(out.get("verified_at"), out.get("checks")))
    else:
        out.update(state=KMS, verified=None, badge=KMS_BADGE)
    return out


def _verified_badge(verified_at: Any, checks: Any) -> str:
    when = "at an unknown time"
    if isinstance(verified_at, str):
        try:
            stamp = dt.datetime.fromisoformat(verified_at)
        except ValueError:
            stamp = None
        if stamp is not None:
            stamp = stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)
            when = "at " + stamp.astimezone(dt.UTC).strftime("%H:%M:%S UTC")
    listed = [str(c) for c in checks] if isinstance(checks, list) else []
    return f"verified here {when}" + (f": {', '.join(listed)}" if listed else "")
