"""A backend that follows the client configuration file across restarts of the local stack.

Why: ``nitro-llm up`` writes ``client.json`` anew on every start (a new API token and KMS endpoint,
and a new gateway URL when its port had to change). A proxy that read the file once kept the old
ones for good, and answered 503 "start it with 'nitro-llm up'" while a stack ran. A proxy whose
gateway comes from that file (no ``--gateway``) now checks it on every use (a ``stat``; the file is
re-read only when it was replaced) and builds a new backend for a new configuration. Nothing is
carried over: in the attested protocol the new stack's enclave is verified afresh before anything is
sealed to it (it has new keys anyway), and no session verified for the old one is used again.

The file is the user's own (written by their ``up``, private to them), trusted as it was at start;
the attestation policy is not re-read: a proxy's trust in enclaves changes only when it restarts.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Unpack

from nitro_llm.client.config import ClientConfig
from nitro_llm.errors import NitroLLMError
from nitro_llm.protocol.messages import AnswerOptions
from nitro_llm.proxy.backend_seam import BackendChunk, ConfidentialBackend

log = logging.getLogger(__name__)

_Signature = tuple[int, int, int, int] | None


def _signature(path: Path) -> _Signature:
    """What changes when the file is rewritten (``ClientConfig.save`` replaces it: a new inode)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class ConfigFollowingBackend:
    """The backend ``build`` makes for the configuration ``path`` holds now (see the module docstring).

    Raises at construction as ``build`` and ``ClientConfig.load`` do, so a proxy with no stack to talk
    to fails at start as before; later, a missing or unreadable file (a stack being set up) keeps
    the backend of the last good one.
    """

    def __init__(self, path: Path, build: Callable[[ClientConfig], ConfidentialBackend]) -> None:
        self.path = path
        self._build = build
        self._lock = threading.Lock()
        self._seen = _signature(path)
        self.config = ClientConfig.load(path)
        self._backend = build(self.config)
        self.model_id = self._backend.model_id
        self.switches = 0
        """How many times a new configuration replaced the backend (for people and tests)."""

    def current(self) -> ConfidentialBackend:
        """The backend for the file's configuration, rebuilt first if the file was replaced."""
        with self._lock:
            seen = _signature(self.path)
            if seen != self._seen:
                self._seen = seen
                self._follow()
            return self._backend

    def _follow(self) -> None:
        try:
            config = ClientConfig.load(self.path)
            if config == self.config:
                return
            backend = self._build(config)
        except NitroLLMError as exc:
            log.warning("keeping the last client configuration: %s", exc.code)
            return
        # The old backend is not closed here: a request may still be reading an answer through it.
        # Its connections go with it; a gateway that moved has closed them anyway.
        self._backend, self.config = backend, config
        self.model_id = backend.model_id
        self.switches += 1
        log.warning("the client configuration changed: following the gateway at %s", config.gateway_url)

    def stream(
        self,
        messages: list[Mapping[str, str]],
        *,
        conversation: str | None = None,
        **options: Unpack[AnswerOptions],
    ) -> Iterator[BackendChunk]:
        """As the current backend's; a named chat's state is that backend's, so a new configuration
        (a new stack, a new enclave) starts its conversations afresh."""
        named = {"conversation": conversation} if conversation is not None else {}
        return self.current().stream(messages, **options, **named)

    def describe(self) -> dict[str, Any]:
        return self.current().describe()

    def probe(self) -> str | None:
        """As the current backend's ``probe``; None (not known to be down) if it has none."""
        probe = getattr(self.current(), "probe", None)
        return probe() if callable(probe) else None

    def close(self) -> None:
        close = getattr(self._backend, "close", None)
        if callable(close):
            close()
