"""Stop sequences: end an answer before the first stop string it contains, whichever engine made it.

The enclave applies this to every engine's stream (enclave/server.py), so the stop strings, sealed
in the request like the question, never leave the enclave. As soon as the answer contains a stop
string it ends just before it: nothing of the match or after it is sent, the engine is stopped, and
the last chunk says ``finish_reason: "stop"``. "As soon as" is counted in characters, so the result
does not depend on how the engine cut its text into pieces (of two stop strings, the one completed
first wins; of two completed by the same character, the longer).

Engines stream token pieces, and a stop string may span two or more of them ("5" + "0" for "50"),
so the end of the text that could still be the start of a stop string is held back until the next
piece settles it: at most the longest stop string's length minus one character. An answer that
ends (max_tokens, end of generation) with such a tail sends it: it did not match.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from nitro_llm.inference.engine import TokenChunk, Usage


class StopAt:
    """``chunks`` cut at the first of ``stops``; an iterator with ``close()`` (the server closes
    what it iterates when it leaves early, and this passes that on to the engine)."""

    def __init__(self, chunks: Iterator[TokenChunk], stops: Sequence[str]) -> None:
        self._inner = chunks
        self._stops = tuple(s for s in stops if s)
        self._held = ""  # text received, not yet sent: a possible start of a stop string
        self._pieces = 0  # answer pieces received (each about one token): usage when we stop
        self._done = False

    def __iter__(self) -> Iterator[TokenChunk]:
        return self

    def __next__(self) -> TokenChunk:
        while not self._done:
            chunk = next(self._inner)  # the engine always ends with a final chunk
            text = self._held + chunk.text
            if chunk.text and not chunk.final:
                self._pieces += 1
            cut = first_match(text, self._stops)
            if cut is not None:
                self._done = True
                self._close_inner()  # generation stops here: nothing after the match is needed
                completion = chunk.usage.completion_tokens if chunk.usage else self._pieces
                prompt = chunk.usage.prompt_tokens if chunk.usage else None
                return TokenChunk(text[:cut], "stop", Usage(prompt, completion))
            if chunk.final:
                self._done = True
                return TokenChunk(text, chunk.finish_reason, chunk.usage)
            keep = partial_match(text, self._stops)
            self._held = text[len(text) - keep :] if keep else ""
            ready = text[: len(text) - keep]
            if ready:
                return TokenChunk(ready)
        raise StopIteration

    def _close_inner(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()

    def close(self) -> None:
        self._done = True
        self._close_inner()


def stop_at(chunks: Iterator[TokenChunk], stops: Sequence[str]) -> Iterator[TokenChunk]:
    """``chunks`` as they are when there is no stop string, else cut at the first one."""
    return StopAt(chunks, stops) if any(stops) else chunks


def first_match(text: str, stops: Sequence[str]) -> int | None:
    """Where the stop string that ``text`` completes first starts (the longer one on a tie), or None."""
    found = [(i + len(s), i) for s, i in ((s, text.find(s)) for s in stops) if i >= 0]
    return min(found)[1] if found else None


def partial_match(text: str, stops: Sequence[str]) -> int:
    """The length of the longest end of ``text`` that is the beginning (not the whole) of a stop string."""
    best = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:size]):
                best = size
                break
    return best
