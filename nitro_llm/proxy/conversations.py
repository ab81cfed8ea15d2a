"""Named conversations: a caller's label for one chat, mapped to state that never leaves this machine.

Why a name: an OpenAI chat-completions request carries the whole history and nothing that says
which chat it continues, so without one the proxy cannot tell two turns of a chat from two chats,
and serves each request as a conversation of its own (the enclave keeps nothing, turn eight
prefills the whole history again). A caller that names its chat lets the proxy give its turns one
conversation, so the enclave keeps that chat's KV cells between them.

Where the name comes from (:func:`conversation_name`), either of:

- the ``X-Nitro-Conversation`` header (:data:`CONVERSATION_HEADER`): any HTTP client can set it
  without touching the body, the web chat sends a random one per chat, and the openai SDK sends it
  per request with ``extra_headers=``. A cross-site page cannot set it: a custom header needs a CORS
  preflight, which the proxy never grants;
- OpenAI's own ``prompt_cache_key`` body field, whose documented meaning is exactly this (requests
  with the same key may share a prompt cache); the openai SDK takes it as a named argument and
  OpenAI-compatible frameworks pass it through.

Not ``user`` (OpenAI's ``safety_identifier`` now): it names a person, so every chat of one person
would become one conversation; not ``metadata``: OpenAI stores it with stored completions as tags,
and clients fill it for their own reasons. Both stay ignored, as before. Given both, the header and
``prompt_cache_key`` must agree.

What a name maps to: the name may be guessable (it comes from a browser or a script), so nothing is
derived from it and it is never sent anywhere. Its first turn draws fresh random state (attested: a
conversation object with its own 32-byte conversation secret, sealed inside each request's HPKE
ciphertext; kms: a conversation with its own KMS data key and random conversation id); its later
turns reuse that state. Two names never share state: each draws its own. The table is keyed by an
HMAC of the name under a key drawn when the table is made, so its keys are fixed-size whatever a
name's length, and no name is kept.

Bounded and expiring: at most ``max_entries`` names, least recently used out first; a name idle for
``idle_seconds`` (default: the enclave's own bound on a conversation's cells and on a kms data key,
600 s) is forgotten, and its next turn starts a new conversation: one cache miss, never a wrong
answer (the enclave reuses cells only for the tokens a turn shares with what they hold).

What the host sees: in the attested protocol, nothing new: the secret travels inside the ciphertext,
as ``nitro-llm chat``'s does (a cache hit answers sooner, as it does for ``chat``). In the kms
protocol the turns of a named chat carry one conversation id and encrypted data key in the clear,
as ``nitro-llm chat``'s turns do, so the gateway can tell they belong together; the enclave's kms
cache is keyed by exactly those. Unnamed requests stay unlinkable: one conversation each, sealed
``one_shot`` (protocol/messages.py), since nothing can continue it: the enclave keeps neither its data
key nor its KV cells, rather than settling and holding them for a turn that never comes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from nitro_llm.proxy.errors import ConversationNameError

CONVERSATION_HEADER = "X-Nitro-Conversation"
BODY_FIELD = "prompt_cache_key"
MAX_NAME_CHARS = 256
DEFAULT_MAX_ENTRIES = 256
DEFAULT_IDLE_SECONDS = 600.0

T = TypeVar("T")


def conversation_name(headers: list[str], field: Any) -> str | None:
    """The caller's name for its chat, from the header's values and the body's ``prompt_cache_key``;
    None when neither is given. Errors never quote the name."""
    if len(headers) > 1:
        raise ConversationNameError(f"{CONVERSATION_HEADER} was sent more than once")
    header = _checked(headers[0], CONVERSATION_HEADER) if headers else None
    body = None if field is None else _checked(field, f"'{BODY_FIELD}'")
    if header is not None and body is not None and header != body:
        raise ConversationNameError(f"{CONVERSATION_HEADER} and '{BODY_FIELD}' name different chats")
    return header if header is not None else body


def _checked(value: Any, where: str) -> str:
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= MAX_NAME_CHARS
        or not value.isprintable()
        or value.strip() != value
    ):
        raise ConversationNameError(f"{where} must be 1 to {MAX_NAME_CHARS} printable characters")
    return value


class ConversationTable(Generic[T]):
    """The state ``make()`` drew for each name, bounded and expiring (see the module docstring).

    Thread-safe; ``make`` runs under the table's lock, so it must be cheap and must not call back
    (both backends' makers build an object around shared clients: no network).
    """

    def __init__(
        self,
        make: Callable[[], T],
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1 or idle_seconds <= 0:
            raise ValueError("max_entries and idle_seconds must be positive")
        self._make = make
        self._max = max_entries
        self._idle = idle_seconds
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, tuple[float, T]] = OrderedDict()  # oldest use first
        self.drawn = 0
        """How many conversations were drawn (for people and tests)."""

    def get(self, name: str) -> T:
        """The state of the chat called ``name``: the one drawn before, or new if there was none (or
        it was forgotten)."""
        slot = hmac.new(self._key, name.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
        with self._lock:
            now = self._clock()
            self._expire(now)
            entry = self._entries.pop(slot, None)
            state = entry[1] if entry is not None else self._draw()
            self._entries[slot] = (now, state)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
            return state

    def _draw(self) -> T:
        self.drawn += 1
        return self._make()

    def _expire(self, now: float) -> None:
        # Entries are in order of last use, so the idle ones are all at the front.
        while self._entries:
            used, _ = next(iter(self._entries.values()))
            if now - used < self._idle:
                return
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._entries)
