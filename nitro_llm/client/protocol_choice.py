"""Which protocol a client command speaks, and the conversation object for it.

``ask`` and ``chat`` default to "attested" as soon as a client policy is available (``--policy``, or
the one ``nitro-llm up`` writes): the user's own machine then checks the enclave, rather than
trusting a KMS key policy it cannot see. Without a policy they fall back to "kms", which needs only
the client configuration, and say so; a ``--policy`` that names no file is an error, never a
fallback. Either way the caller gets an object with the same ``stream``/``close``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Protocol, Unpack

from nitro_llm.client.config import ClientConfig, default_config_path, local_stack_dir
from nitro_llm.client.errors import PolicyNotFound
from nitro_llm.client.wire import AnswerChunk
from nitro_llm.errors import ConfigError
from nitro_llm.protocol.messages import AnswerOptions

ATTESTED = "attested"
KMS = "kms"
PROTOCOLS = (ATTESTED, KMS)


class Conversation(Protocol):
    def stream(
        self, messages: list[Mapping[str, str]], **options: Unpack[AnswerOptions]
    ) -> Iterator[AnswerChunk]: ...

    def close(self) -> None: ...


def default_policy_path() -> Path:
    """Where ``nitro-llm up`` writes the local stack's client policy."""
    return local_stack_dir() / "policy.json"


def choose_protocol(requested: str | None, policy_path: Path | None) -> str:
    """``requested`` if given; else "attested" when a policy file is available, else "kms".

    A policy named explicitly must exist: a mistyped ``--policy`` raises :class:`PolicyNotFound`
    rather than quietly trading this machine's check of the enclave for the kms protocol. Only when
    no policy was named and the default one is absent is "kms" chosen (see :func:`kms_fallback_note`).
    """
    if requested is not None:
        if requested not in PROTOCOLS:
            raise ConfigError(
                f"unknown protocol {requested[:20]!r}",
                hint=f"use --protocol {' or --protocol '.join(PROTOCOLS)}",
            )
        if requested == ATTESTED and policy_path is not None and not policy_path.is_file():
            raise PolicyNotFound(f"no client policy at {policy_path}")
        return requested
    if policy_path is not None:
        if not policy_path.is_file():
            raise PolicyNotFound(f"no client policy at {policy_path}")
        return ATTESTED
    return ATTESTED if default_policy_path().is_file() else KMS


def kms_fallback_note() -> str:
    """What to tell the user when no policy was named or found and "kms" was chosen for them."""
    return (
        f"no client policy at {default_policy_path()}: using the kms protocol, where the KMS key policy,"
        " not this machine, checks the enclave (pass --policy FILE for the attested protocol)"
    )


def open_conversation(
    protocol: str,
    *,
    config_path: Path | None = None,
    policy_path: Path | None = None,
    gateway: str | None = None,
    suite: str | None = None,
) -> Conversation:
    """A conversation in ``protocol``. "attested" needs a policy and a gateway URL (``gateway``, or the
    client configuration's); "kms" needs the client configuration. With the configuration's
    ``failover_attempts`` above 1, a turn cut by a lost replica is sent again (client/failover.py)."""
    if protocol == KMS:
        from nitro_llm.client.kms_conversation import KmsConversation

        config = ClientConfig.load(config_path or default_config_path())
        return with_failover(KmsConversation(config), config.failover_attempts)
    if protocol != ATTESTED:
        raise ConfigError(f"unknown protocol {protocol[:20]!r}", hint=f"use one of {', '.join(PROTOCOLS)}")
    from nitro_llm.client.attested_conversation import AttestedConversation
    from nitro_llm.client.policy import ClientPolicy
    from nitro_llm.protocol.attested_wire import DEFAULT_SUITE

    policy = ClientPolicy.load(policy_path or default_policy_path())
    attempts = 1
    if gateway is None:  # the configuration's gateway, with its API token and certificate
        config = ClientConfig.load(config_path or default_config_path())
        gateway, http, attempts = config.gateway_url, config.gateway_http(), config.failover_attempts
    else:
        import httpx

        http = httpx.Client(timeout=httpx.Timeout(10.0, read=300.0))
    return with_failover(
        AttestedConversation(gateway, policy, suite=suite or DEFAULT_SUITE, http=http), attempts
    )


def with_failover(conversation: Conversation, attempts: int) -> Conversation:
    if attempts <= 1:
        return conversation
    from nitro_llm.client.failover import FailoverConversation

    return FailoverConversation(conversation, attempts=attempts)
