"""(i) The peer: llama-cpp-python's own OpenAI-compatible server against our whole confidential path.

The server a user would pick instead of ours is ``python -m llama_cpp.server``: the same llama.cpp,
the same model file (the default SmolLM2 GGUF), started here with the same threads (decode and
batch), the same context size per sequence and llama.cpp's same batch size, and driven by the same
openai SDK code with streaming as our ``nitro-llm proxy`` (started here twice, ``--protocol kms``
and ``--protocol attested``, in front of the same local stack: proxy -> gateway -> enclave image).
Every request asks for greedy decoding with no repeat penalty (the peer's default penalty is 1.1;
ours has none), so both sides do the same work and, with the same chat template, write the same
text: the report says whether they did.

Three measurements, each alternating the routes within a round (reversed every other round) so
that a neighbour's burst on the shared cores weighs on all of them; ratios are taken within a round
(ours over the peer, as times: above 1, we are slower), then the median over rounds. The peer keeps
the KV state of its last request and reuses the longest common prefix with the next one, whoever
sent it: for two users' different questions, the chat template's system prompt (24 tokens of this
model's 42 for a short question). Our enclave never reuses what another request left (DESIGN.md:
timing would reveal other users' prompts); it reuses only its public prefix, the same template
tokens prefilled from the model file at start (inference/batching.py), so for a new question both
sides prefill the same tokens. Each measurement starts after "another user's" one-token question,
so that what the peer reuses is that shared prefix and never the very prompt it is about to be
asked:

- one client: time to first token and streamed tokens per second of one answer, a new question
  each round (questions that differ from their first word, as users' do); and the same question
  behind a system prompt of its own (a random session number first), which nobody else's request
  shares: then both sides prefill the whole prompt, and the ratio is our path's cost alone;
- ``sessions`` clients at once: each one's time to first token (median and slowest) and the
  aggregate tokens per second. The peer serves one request at a time (its default would even cut a
  streaming answer short when another request arrives; it is started with
  ``--interrupt_requests False`` so every answer is whole); our enclave batches them;
- the 8-turn conversation of scenario (f), time to first token per turn, every chat named by the
  same SDK code with OpenAI's ``prompt_cache_key`` (a new random one per chat; the peer ignores
  it). What the peer keeps is exactly a chat's history when one client talks to it alone; our proxy
  maps the name to one conversation (proxy/conversations.py), so the enclave keeps that chat's KV
  cells, as it does for the direct clients (``KmsConversation``, and ``AttestedConversation`` with
  its conversation secret), and a turn prefills only what it added. As in (f), every route's next
  turn is sent once the enclave has kept the previous one (a person reading the answer), and the
  enclave's own counters (cache hits, tokens prefilled) are reported per route.
"""

from __future__ import annotations

import contextlib
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from nitro_llm_dev.bench.speed.conversation import COUNTERS, QUESTIONS, wait_settled
from nitro_llm_dev.bench.speed.stacks import BenchStackError, enclave_stats
from nitro_llm_dev.bench.speed.stats import median
from nitro_llm_dev.local.processes import ManagedProcess, cli_argv, wait_until
from nitro_llm_dev.local.stack import LocalStack, free_port

PEER = "llama_cpp.server"
PROXY_ROUTES = ("proxy kms", "proxy attested")
DIRECT_ROUTES = ("direct kms", "direct attested")
QUESTIONS_AT_ONCE = (
    "Tell me a story about a dragon who learns to cook.",
    "Describe a night in a lighthouse during a storm.",
    "Imagine a robot that paints, and write about its first exhibition.",
    "Two friends cross a desert: write what happens to them.",
    "Picture a city under the sea and tell me about the people who live there.",
    "Write about a clockmaker's apprentice on her first day.",
    "Narrate a fox's walk through a winter night.",
    "What might a traveller see on a night train across Europe?",
    "Invent a garden on the moon and describe who tends it.",
    "Give me the history of a lost violin, from its maker to today.",
    "Explain how a mountain village prepares for its yearly festival.",
    "Sketch the voyage of a ship made of glass.",
)
"""Questions that differ from their first word: what two clients share is the chat template's system
prompt only, as between real users (a common opening would inflate what the peer can reuse)."""
SAME_SAMPLING: dict[str, Any] = {"repeat_penalty": 1.0}
"""Sent to every target: the peer's default is 1.1; our proxy accepts and ignores penalties."""
_READY_TIMEOUT = 120.0
ENCLAVE_COUNTERS = (*COUNTERS, "kv_cache_settle_tokens", "kv_cache_public_reused_tokens")
"""The enclave's counters per route; ``kv_cache_settle_tokens``: answer tokens prefilled again
after their answer, keeping a conversation's cells exact for a next turn;
``kv_cache_public_reused_tokens``: prompt tokens restored from the public prefix (inference/batching.py)."""


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible base URL and the model id it serves."""

    name: str
    base_url: str
    model: str


@dataclass
class Answer:
    first_token_s: float
    seconds: float
    tokens: int
    text: str
    prompt_tokens: int | None = None

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens after the first over the time after the first: the streamed rate a reader sees."""
        after = self.seconds - self.first_token_s
        return (self.tokens - 1) / after if self.tokens > 1 and after > 0 else 0.0


def _models(base_url: str) -> str | None:
    try:
        reply = httpx.get(f"{base_url}/models", timeout=2)
        data = reply.json().get("data") if reply.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    return str(data[0]["id"]) if data else None


@contextlib.contextmanager
def _serve(name: str, argv: list[str], log: Path, base_url: str) -> Iterator[Endpoint]:
    process = ManagedProcess(name, argv, log)
    process.start()
    try:
        found: list[str] = []

        def ready() -> bool:
            model = _models(base_url)
            if model:
                found.append(model)
            return bool(found)

        wait_until(ready, what=f"{name} to serve {base_url}/models", timeout=_READY_TIMEOUT, process=process)
        yield Endpoint(name, base_url, found[0])
    finally:
        process.stop()


def peer_argv(model: Path, *, threads: int, ctx: int, port: int) -> list[str]:
    """``python -m llama_cpp.server`` with our enclave's settings (module docstring)."""
    return [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--n_threads",
        str(threads),
        "--n_threads_batch",
        str(threads),
        "--n_ctx",
        str(ctx),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--interrupt_requests",
        "False",
        "--verbose",
        "False",
    ]


@contextlib.contextmanager
def running_peer(model: Path, *, threads: int, ctx: int, logs: Path) -> Iterator[Endpoint]:
    port = free_port()
    argv = peer_argv(model, threads=threads, ctx=ctx, port=port)
    with _serve(PEER, argv, logs / "llama-cpp-server.log", f"http://127.0.0.1:{port}/v1") as endpoint:
        yield endpoint


@contextlib.contextmanager
def running_proxy(stack: LocalStack, protocol: str) -> Iterator[Endpoint]:
    """``nitro-llm proxy --protocol PROTOCOL`` for the stack's client configuration (and policy)."""
    port = free_port()
    argv = cli_argv("proxy", "--port", str(port), "--protocol", protocol)
    argv += ["--config", str(stack.root / "client.json")]
    if protocol == "attested":
        argv += ["--policy", str(stack.client_policy_path)]
    with _serve(f"proxy {protocol}", argv, stack.logs / f"proxy-{protocol}.log",
                f"http://127.0.0.1:{port}/v1") as endpoint:  # fmt: skip
        yield endpoint


def question(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": QUESTIONS_AT_ONCE[i % len(QUESTIONS_AT_ONCE)]}]


def openai_answer(
    client: Any, model: str, messages: Sequence[Mapping[str, str]], max_tokens: int, chat: str | None = None
) -> Answer:
    """One streamed answer through the openai SDK: the first token's time is the first chunk with
    text; tokens are the usage's when the server sends it (ours), else the chunks with text (the
    peer streams one token per chunk and sends no usage). ``chat``: the chat's ``prompt_cache_key``."""
    start = time.perf_counter()
    first: float | None = None
    chunks = 0
    parts: list[str] = []
    usage: Any = None
    stream = client.chat.completions.create(
        model=model,
        messages=list(messages),
        max_tokens=max_tokens,
        temperature=0.0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=SAME_SAMPLING,
        **({"prompt_cache_key": chat} if chat is not None else {}),
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if first is None:
                first = time.perf_counter() - start
            chunks += 1
            parts.append(chunk.choices[0].delta.content)
        if getattr(chunk, "usage", None):
            usage = chunk.usage
    seconds = time.perf_counter() - start
    tokens = int(usage.completion_tokens) if usage is not None else chunks
    prompt_tokens = int(usage.prompt_tokens) if usage is not None else None
    return Answer(first if first is not None else seconds, seconds, tokens, "".join(parts), prompt_tokens)


@contextlib.contextmanager
def _openai_client(endpoint: Endpoint) -> Iterator[Any]:
    import openai

    client = openai.OpenAI(base_url=endpoint.base_url, api_key="bench", max_retries=0, timeout=600.0)
    try:
        yield client
    finally:
        client.close()


def concurrent_answers(endpoint: Endpoint, sessions: int, max_tokens: int) -> tuple[list[Answer], float]:
    """``sessions`` clients, each its own SDK client, asking different questions at the same moment;
    their answers and the wall time from that moment to the last answer's end."""
    barrier = threading.Barrier(sessions + 1)
    answers: list[Answer | None] = [None] * sessions
    failures: list[BaseException] = []

    def run(i: int) -> None:
        try:
            with _openai_client(endpoint) as client:
                barrier.wait(60)
                answers[i] = openai_answer(client, endpoint.model, question(i), max_tokens)
        except Exception as exc:  # reported below: a failed client fails the benchmark
            failures.append(exc)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(sessions)]
    for worker in workers:
        worker.start()
    barrier.wait(60)
    start = time.perf_counter()
    for worker in workers:
        worker.join(900)
    wall = time.perf_counter() - start
    done = [a for a in answers if a is not None]
    if failures or len(done) != sessions:
        raise BenchStackError(
            f"{endpoint.name}: {len(failures)} of {sessions} clients failed: {failures[:1]}"
        )
    return done, wall


Turns = list[Answer]
Talker = Callable[[list[dict[str, str]]], Answer]


def run_conversation(talk: Talker, turns: int, after_turn: Callable[[], None] = lambda: None) -> Turns:
    """One chat, each turn sending the whole history (as a chat client does)."""
    messages: list[dict[str, str]] = []
    out: Turns = []
    for turn in range(turns):
        messages.append({"role": "user", "content": QUESTIONS[turn % len(QUESTIONS)]})
        answer = talk(list(messages))
        out.append(answer)
        messages.append({"role": "assistant", "content": answer.text})
        after_turn()
    return out


def _direct_talker(stack: LocalStack, protocol: str, max_tokens: int) -> tuple[Talker, Callable[[], None]]:
    """A direct client of ours that names its conversation, so the enclave's cache applies."""
    if protocol == "kms":
        from nitro_llm.client.kms_conversation import KmsConversation

        client: Any = KmsConversation(stack.client_config())
    else:
        from nitro_llm.client.attested_conversation import AttestedConversation
        from nitro_llm.client.policy import ClientPolicy

        http = httpx.Client(
            headers=stack.client_config().auth_headers(), timeout=httpx.Timeout(10.0, read=300.0)
        )
        client = AttestedConversation(
            stack.gateway_url, ClientPolicy.load(stack.client_policy_path), http=http, remember=True
        )
        client.verify()  # once per client, as a chat does: out of the turns' timings

    def talk(messages: list[dict[str, str]]) -> Answer:
        start = time.perf_counter()
        first: float | None = None
        parts: list[str] = []
        tokens, prompt_tokens = 0, None
        for chunk in client.stream(messages, max_tokens=max_tokens, temperature=0.0):
            if chunk.text and first is None:
                first = time.perf_counter() - start
            parts.append(chunk.text)
            if chunk.final and chunk.usage:
                tokens = int(chunk.usage.get("completion_tokens", 0))
                prompt_tokens = int(chunk.usage.get("prompt_tokens", 0))
        seconds = time.perf_counter() - start
        return Answer(first if first is not None else seconds, seconds, tokens, "".join(parts), prompt_tokens)

    return talk, client.close


def _settle(stack: LocalStack) -> None:
    wait_settled(stack)


def _counters(stack: LocalStack) -> dict[str, int]:
    stats = enclave_stats(stack)
    return {k: v if isinstance(v := stats.get(k, 0), int) else 0 for k in ENCLAVE_COUNTERS}


def _ordered(routes: Sequence[str], round_index: int) -> list[str]:
    return list(routes) if round_index % 2 == 0 else list(reversed(routes))


def _paired(ours: Sequence[float], peer: Sequence[float]) -> float:
    """The median over rounds of ours over the peer's in the same round."""
    return round(median([o / p for o, p in zip(ours, peer, strict=True) if p > 0]), 3)


def bench_peer(
    stack: LocalStack,
    model: Path,
    *,
    threads: int,
    ctx: int,
    max_tokens: int = 64,
    sessions: int = 8,
    turns: int = 8,
    turn_tokens: int = 48,
    rounds: int = 3,
    single_rounds: int = 7,
    progress: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """The three measurements of the module docstring, as one JSON-able dict (see ``report.py``):
    ``single_rounds`` single answers per route (they are short and noisy), ``rounds`` of the others."""
    with contextlib.ExitStack() as servers:
        endpoints = {
            PEER: servers.enter_context(running_peer(model, threads=threads, ctx=ctx, logs=stack.logs))
        }
        for route in PROXY_ROUTES:
            endpoints[route] = servers.enter_context(running_proxy(stack, route.split()[1]))
        clients = {name: servers.enter_context(_openai_client(e)) for name, e in endpoints.items()}

        def another_user(name: str) -> None:
            """A one-token question from someone else: what the peer keeps is then not the next
            request's own prompt (only the template's system prompt is shared), nor ours settling."""
            openai_answer(clients[name], endpoints[name].model, [{"role": "user", "content": "Hi."}], 1)
            wait_settled(stack)

        for name in endpoints:  # warm-up: model pages, attestation, first KMS calls
            another_user(name)
        progress(f"(i) one client, {max_tokens} tokens: peer vs proxy (kms, attested)")
        single: dict[str, list[Answer]] = {route: [] for route in endpoints}
        private: dict[str, list[Answer]] = {route: [] for route in endpoints}
        single_counts: dict[str, list[dict[str, int]]] = {route: [] for route in endpoints}
        private_counts: dict[str, list[dict[str, int]]] = {route: [] for route in endpoints}
        for r in range(single_rounds):
            own = {
                "role": "system",
                "content": f"Session {secrets.token_hex(4)}. You are a helpful assistant.",
            }
            for name in _ordered(list(endpoints), r):
                # Each question follows another user's (the default system prompt: what the peer then
                # reuses) and meets an idle enclave: after a kms request it keeps the conversation's
                # cells (keyed by its new data key) and re-prefills the answer's, for a second turn
                # that through the proxy never comes; that work shows in the clients-at-once rows.
                for asked, into, counts in (
                    (question(r), single, single_counts),
                    ([own, *question(r)], private, private_counts),
                ):
                    another_user(name)
                    before = _counters(stack)
                    into[name].append(openai_answer(clients[name], endpoints[name].model, asked, max_tokens))
                    wait_settled(stack)
                    after = _counters(stack)
                    counts[name].append({k: after[k] - before[k] for k in ENCLAVE_COUNTERS})
        progress(f"(i) {sessions} clients at once: peer vs proxy (kms, attested)")
        many: dict[str, list[tuple[list[Answer], float]]] = {route: [] for route in endpoints}
        many_counts: dict[str, list[dict[str, int]]] = {route: [] for route in endpoints}
        for r in range(rounds):
            for name in _ordered(list(endpoints), r):
                another_user(name)
                before = _counters(stack)
                many[name].append(concurrent_answers(endpoints[name], sessions, max_tokens))
                wait_settled(stack)
                after = _counters(stack)
                many_counts[name].append({k: after[k] - before[k] for k in ENCLAVE_COUNTERS})
        progress(f"(i) a {turns}-turn chat: peer vs proxy and direct clients")
        chats = _conversations(stack, endpoints, clients, another_user, turns, turn_tokens, rounds)
    prompt, shared = shared_prefix(model, question(0), question(1))
    return {
        "threads": threads,
        "ctx": ctx,
        "rounds": rounds,
        "single_rounds": single_rounds,
        "max_tokens": max_tokens,
        "sessions": sessions,
        "single_prompt_tokens": prompt,
        "shared_prefix_tokens": shared,
        "single": _single_summary(single, single_counts),
        "single_own_prompt": _single_summary(private, private_counts),
        "concurrent": _concurrent_summary(many, many_counts),
        "conversation": {**chats, "turns": turns, "max_tokens": turn_tokens},
    }


def _conversations(
    stack: LocalStack,
    endpoints: Mapping[str, Endpoint],
    clients: Mapping[str, Any],
    another_user: Callable[[str], None],
    turns: int,
    max_tokens: int,
    rounds: int,
) -> dict[str, Any]:
    routes = [PEER, *PROXY_ROUTES, *DIRECT_ROUTES]
    runs: dict[str, list[Turns]] = {route: [] for route in routes}
    counters: dict[str, list[dict[str, int]]] = {route: [] for route in routes}
    for r in range(rounds):
        for name in _ordered(routes, r):
            if name not in DIRECT_ROUTES:  # not this very chat, kept from the previous round
                another_user(name)
            before = _counters(stack)
            if name in DIRECT_ROUTES:
                talk, close = _direct_talker(stack, name.split()[1], max_tokens)
                try:  # a person reading: the next turn once the enclave has kept this one
                    runs[name].append(run_conversation(talk, turns, lambda: _settle(stack)))
                finally:
                    close()
            else:
                endpoint, client = endpoints[name], clients[name]

                def talk_openai(
                    messages: list[dict[str, str]],
                    e: Endpoint = endpoint,
                    c: Any = client,
                    chat: str = f"bench-chat-{secrets.token_hex(8)}",
                ) -> Answer:
                    return openai_answer(c, e.model, messages, max_tokens, chat)

                runs[name].append(run_conversation(talk_openai, turns, lambda: _settle(stack)))
            wait_settled(stack)
            after = _counters(stack)
            counters[name].append({k: after[k] - before[k] for k in ENCLAVE_COUNTERS})
    return _conversation_summary(runs, counters, turns)


def _first_tokens(run: Turns) -> list[float]:
    return [answer.first_token_s for answer in run]


def _conversation_summary(
    runs: Mapping[str, list[Turns]], counters: Mapping[str, list[dict[str, int]]], turns: int
) -> dict[str, Any]:
    """Per route: median time to first token per turn; paired ratios to the peer per turn and over
    the whole chat (the sum of its turns' first-token times); whether our routes answered the same
    text (they must: the cache changes no answer) and how often the peer's matched ours (its reused
    KV state may round differently, and one token apart the chats diverge); the enclave's counters.
    The later turns (2 on) are also summed alone: turn 1 is a new question, where the peer reuses the
    system prompt another client's request left and our enclave, by design, does not."""
    routes = list(runs)
    peer = [_first_tokens(run) for run in runs[PEER]]
    ours = [answer.text for answer in runs[DIRECT_ROUTES[0]][0]]
    out: dict[str, Any] = {"routes": routes, "ttft_seconds": {}, "ttft_ratio_to_peer": {},
                           "all_turns_ttft_ratio_to_peer": {}, "later_turns_ttft_ratio_to_peer": {},
                           "last_over_first": {},
                           "same_text_as_peer": {}, "enclave": {}}  # fmt: skip
    for route in routes:
        firsts = [_first_tokens(run) for run in runs[route]]
        per_turn = [median([f[t] for f in firsts]) for t in range(turns)]
        out["ttft_seconds"][route] = [round(x, 4) for x in per_turn]
        out["last_over_first"][route] = round(per_turn[-1] / per_turn[0], 3)
        out["enclave"][route] = {k: int(median([c[k] for c in counters[route]])) for k in ENCLAVE_COUNTERS}
        if route == PEER:
            continue
        out["ttft_ratio_to_peer"][route] = [
            _paired([f[t] for f in firsts], [p[t] for p in peer]) for t in range(turns)
        ]
        out["all_turns_ttft_ratio_to_peer"][route] = _paired([sum(f) for f in firsts], [sum(p) for p in peer])
        out["later_turns_ttft_ratio_to_peer"][route] = _paired(
            [sum(f[1:]) for f in firsts], [sum(p[1:]) for p in peer]
        )
        same = [a.text == b.text for run, other in zip(runs[route], runs[PEER], strict=True)
                for a, b in zip(run, other, strict=True)]  # fmt: skip
        out["same_text_as_peer"][route] = round(sum(same) / len(same), 3)
    out["ours_same_answers"] = all(
        [a.text for a in run] == ours for route in routes if route != PEER for run in runs[route]
    )
    out["prompt_tokens"] = [answer.prompt_tokens or 0 for answer in runs[DIRECT_ROUTES[0]][0]]
    return out


def _single_summary(
    single: Mapping[str, list[Answer]], counts: Mapping[str, list[dict[str, int]]]
) -> dict[str, Any]:
    peer = single[PEER]
    out: dict[str, Any] = {}
    for name, answers in single.items():
        row: dict[str, Any] = {
            "first_token_s": round(median([a.first_token_s for a in answers]), 4),
            "tokens_per_s": round(median([a.decode_tokens_per_s for a in answers]), 2),
            "latency_s": round(median([a.seconds for a in answers]), 4),
            "tokens": int(median([a.tokens for a in answers])),
            "enclave": {k: int(median([c[k] for c in counts[name]])) for k in ENCLAVE_COUNTERS},
        }
        if name != PEER:
            row["same_text_as_peer"] = all(a.text == p.text for a, p in zip(answers, peer, strict=True))
            row["first_token_ratio"] = _paired(
                [a.first_token_s for a in answers], [p.first_token_s for p in peer]
            )
            # time per streamed token, ours over the peer's: the peer's rate over ours
            row["per_token_ratio"] = _paired(
                [p.decode_tokens_per_s for p in peer], [a.decode_tokens_per_s for a in answers]
            )
            row["latency_ratio"] = _paired([a.seconds for a in answers], [p.seconds for p in peer])
        out[name] = row
    return out


def _concurrent_summary(
    many: Mapping[str, list[tuple[list[Answer], float]]], counts: Mapping[str, list[dict[str, int]]]
) -> dict[str, Any]:
    def first_median(run: tuple[list[Answer], float]) -> float:
        return median([a.first_token_s for a in run[0]])

    def aggregate(run: tuple[list[Answer], float]) -> float:
        answers, wall = run
        return sum(a.tokens for a in answers) / wall if wall > 0 else 0.0

    peer = many[PEER]
    out: dict[str, Any] = {}
    for name, runs in many.items():
        row: dict[str, Any] = {
            "first_token_median_s": round(median([first_median(r) for r in runs]), 4),
            "first_token_slowest_s": round(median([max(a.first_token_s for a in r[0]) for r in runs]), 4),
            "aggregate_tokens_per_s": round(median([aggregate(r) for r in runs]), 2),
            "tokens": int(median([sum(a.tokens for a in r[0]) for r in runs])),
            "enclave": {k: int(median([c[k] for c in counts[name]])) for k in ENCLAVE_COUNTERS},
        }
        if name != PEER:
            row["first_token_ratio"] = _paired(
                [first_median(r) for r in runs], [first_median(p) for p in peer]
            )
            # the time to answer all of them, ours over the peer's: the peer's aggregate rate over ours
            row["aggregate_time_ratio"] = _paired([aggregate(p) for p in peer], [aggregate(r) for r in runs])
        out[name] = row
    return out


def shared_prefix(
    model: Path, first: Sequence[Mapping[str, str]], second: Sequence[Mapping[str, str]]
) -> tuple[int, int]:
    """(prompt tokens of ``first``, tokens its prompt shares from the start with ``second``'s): what
    the peer, which keeps its last request's KV state, reuses for one client's question from
    another's. Our enclave reuses its public prefix instead, the template's part of it, whoever asked
    before (the report shows the enclave's own count)."""
    from nitro_llm.inference.llama_batch import LlamaBatchDecoder
    from nitro_llm.protocol.messages import chat_request

    decoder = LlamaBatchDecoder(model, n_seq=1, n_ctx_seq=256, n_threads=1)
    try:
        a = decoder.prompt_tokens(chat_request(list(first)).messages)
        b = decoder.prompt_tokens(chat_request(list(second)).messages)
    finally:
        decoder.close()
    same = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return len(a), same


def missing_packages() -> list[str]:
    """What scenario (i) needs that is not installed: the openai SDK and the peer's server extra
    (llama-cpp-python itself is the project's, built portable by scripts/setup.sh)."""
    import importlib.util

    wanted = {
        "openai": "openai",
        "sse_starlette": "sse-starlette",
        "starlette_context": "starlette-context",
        "pydantic_settings": "pydantic-settings",
        "yaml": "PyYAML",
    }
    return [package for module, package in wanted.items() if importlib.util.find_spec(module) is None]
