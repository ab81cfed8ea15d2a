"""The issue's targets, checked against one run's numbers (never asserted in timed tests)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

DEFAULT_BUDGET_SECONDS = 300
PEER_GOAL = 1.05
"""Our single answers' times over llama_cpp.server's: at most this (issue 14)."""
STARTUP_GOAL_SECONDS = 3.0


def _row(rows: list[dict[str, Any]], prefix: str) -> dict[str, Any] | None:
    return next((r for r in rows if str(r.get("path", "")).startswith(prefix)), None)


def check_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per target: what was measured and whether it meets the target (None: not run)."""
    out: list[dict[str, Any]] = []

    def add(target: str, measured: str, met: bool | None) -> None:
        out.append({"target": target, "measured": measured, "met": met})

    a = results.get("a")
    if a:
        for row in a["rows"][1:]:
            add(
                f"(a) {row['path']}: latency within 2% of direct llama.cpp at {a['max_tokens']} tokens",
                f"paired: latency ratio {row.get('paired_latency_ratio', 0):.3f}, tokens/s ratio "
                f"{row.get('paired_tokens_per_s_ratio', 0):.3f}; of medians: {row['latency_ratio']:.3f}, "
                f"{row['tokens_per_s_ratio']:.3f}",
                row.get("paired_latency_ratio", row["latency_ratio"]) <= 1.02,
            )
        verify = (a.get("crypto") or {}).get("attestation_verify_ms") or {}
        if "first_document_best_batch" in verify:
            cold, warm = verify["first_document_best_batch"], verify["cached_ca_bundle_best_batch"]
            add(
                "(a) verifying a real AWS attestation document, every check, under 5 ms CPU",
                f"{cold:.2f} ms first document, {warm:.2f} ms with its CA bundle cached (best batch medians)",
                cold < 5.0 and warm < cold,
            )
    b = results.get("b")
    if b:
        at8 = next((r for r in b if r["concurrency"] == 8), None)
        if at8:
            add(
                "(b) p50 under 2 ms at concurrency 8",
                f"p50 {at8['p50_ms']:.2f} ms (p99 {at8['p99_ms']:.2f} ms)",
                at8["p50_ms"] < 2.0,
            )
            add(
                "(b) at least 1,000 requests/s at concurrency 8",
                f"{at8['requests_per_s']:.0f} requests/s",
                at8["requests_per_s"] >= 1000,
            )
        at1 = next((r for r in b if r["concurrency"] == 1), None)
        if at1:
            add("(b) p50 under 2 ms at concurrency 1", f"p50 {at1['p50_ms']:.2f} ms", at1["p50_ms"] < 2.0)
    c = results.get("c")
    if c:
        best = max(c["rows"][1:], key=lambda r: r["speedup_vs_seed"], default=None)
        if best:
            add(
                "(c) at least 4x the seed stack's tokens/s on Bloom-560m",
                f"{best['engine']}: {best['speedup_vs_seed']:.2f}x "
                f"(bytes bound {best['bytes_bound']:.2f}x, {best['share_of_bound']:.0%} of it)",
                best["speedup_vs_seed"] >= 4.0,
            )
    d = results.get("d")
    if d:
        add(
            f"(d) {d['sessions']} sessions: aggregate >= 90% of llama.cpp's batched decode",
            f"{d['aggregate_tps']:.1f} vs {d['llama_cpp_batched_tps']:.1f} tokens/s "
            f"= {d['aggregate_vs_llama_cpp_batched']:.0%}",
            d["aggregate_vs_llama_cpp_batched"] >= 0.9,
        )
        add(
            "(d) no session starved",
            f"slowest session at {d['slowest_vs_fastest_session']:.0%} of the fastest's rate",
            d["slowest_vs_fastest_session"] >= 0.7,
        )
        overload = d.get("overload") or {}
        if overload:
            refused = overload.get("refused", 0)
            add(
                "(d) beyond capacity: bounded queue, 429/503 with Retry-After",
                f"{overload['requests']} at once for capacity {overload['capacity']}: "
                f"statuses {overload['statuses']}, {overload.get('refused_with_retry_after', 0)}/{refused} "
                "refusals carry Retry-After",
                refused > 0 and overload.get("refused_with_retry_after") == refused,
            )
    e = results.get("e")
    if e:
        add(
            "(e) one KMS Decrypt for a 10-turn chat",
            f"{e['kms_decrypt_calls']} Decrypt for {e['turns']} turns (seed: {e['seed_decrypts']})",
            e["kms_decrypt_calls"] == 1,
        )
    f = results.get("f")
    if f:
        modes = f["modes"]
        add(
            f"(f) turn-{f['turns']} over turn-1 time to first token with the KV cache: at most 1.3",
            f"cached {modes['cached']['last_over_first']:.2f} (turns spaced), "
            f"{modes['cached_back_to_back']['last_over_first']:.2f} (back to back); "
            f"uncached {modes['uncached']['last_over_first']:.2f}",
            modes["cached"]["last_over_first"] <= 1.3,
        )
        if "last_turn_over_its_question_alone" in f:
            add(
                f"(f) what {f['turns'] - 1} turns of history add: turn {f['turns']} over its question asked "
                "alone, with the KV cache (a figure, no target)",
                f"{f['last_turn_over_its_question_alone']:.2f} "
                f"({f['last_question_alone_ttft_seconds']:.3f} s alone; "
                f"prefilled at turn 1 and turn {f['turns']}: {f['cached_prefilled_tokens'][0]} and "
                f"{f['cached_prefilled_tokens'][-1]} tokens)",
                None,
            )
        add(
            "(f) cached answers equal uncached ones word for word (greedy)",
            f"{'same' if f['same_answers'] else 'different'} text over {f['rounds']} rounds of "
            f"{f['turns']} turns; enclave: {f['enclave'].get('kv_cache_hits', 0)} cache hits",
            bool(f["same_answers"]),
        )
    g = results.get("g")
    if g:
        through = g["through_stack"]
        n = g["threads"]
        # Which count is faster depends on what else runs on the cores (idle: more threads; a busy
        # neighbour: one, by far): the default is judged by its worst case over this run's conditions.
        ratios = [
            g["in_process"]["prefill"]["ratio"],
            g["in_process"]["decode"]["ratio"],
            g["in_process_neighbour_busy"]["prefill"]["ratio"],
            g["in_process_neighbour_busy"]["decode"]["ratio"],
            through["prefill_ratio"],
            through["decode_ratio"],
        ]
        worst = min(ratios)  # n threads' speed over one thread's, at its worst
        safer = 1 if worst < 1 else n
        add(
            f"(g) the enclave's default thread count ('auto') has the better worst case ({n} threads vs 1: "
            "idle, busy neighbour, through the stack)",
            f"auto = {g['auto']} on {g['cpus']} CPUs; {n} threads vs 1 at worst {worst}x; through the stack: "
            f"prefill {through['prefill_ratio']}x, decode {through['decode_ratio']}x (faster here: "
            f"{g['faster_through_stack']}); in process {g['in_process']['prefill']['ratio']}x / "
            f"{g['in_process']['decode']['ratio']}x "
            f"(other load {g['in_process']['other_load_cores']} cores), "
            f"with a busy neighbour {g['in_process_neighbour_busy']['prefill']['ratio']}x / "
            f"{g['in_process_neighbour_busy']['decode']['ratio']}x",
            g["auto"] == safer,
        )
    if h := results.get("h"):
        widest = max(h, key=lambda row: row["replicas"])
        add(
            f"(h) the balancer hop, {widest['replicas']} replicas, {widest['concurrency']} clients"
            " (a figure, no target)",
            f"p50 ratio {widest['p50_ratio']:.3f}, req/s ratio {widest['throughput_ratio']:.3f}, "
            f"{widest['failed']} failed",
            None,
        )
    if peer := results.get("i"):
        _peer_targets(peer, add)
    if i := results.get("j"):
        med = i["median"]
        add(
            f"(j) from `nitro-llm up` to the first answer under {STARTUP_GOAL_SECONDS:.0f} s (image cached)",
            f"{med['first_answer_s']:.2f} s: ready {med['ready_s']:.2f} s, then `nitro-llm ask` "
            f"{med['ask_s']:.2f} s (median of {i['rounds']} restarts; load {i.get('load_average_1m')})",
            med["first_answer_s"] < STARTUP_GOAL_SECONDS,
        )
    ran = set(results.get("options", {}).get("scenarios", ""))
    if ran >= set("abde"):
        # The run's whole time, less the scenarios the default does not run (each timed on its own).
        others = sorted(ran - set("abde"))
        spent = results.get("scenario_seconds", {})
        seconds = results.get("seconds", 0) - sum(spent.get(k, 0) for k in others)
        add(
            "default bench (a, b, d, e) under 5 minutes",
            f"{seconds:.0f} s, stacks' start-up included"
            + (f" ({', '.join(others)} ran too and are left out)" if others else ""),
            seconds < DEFAULT_BUDGET_SECONDS,
        )
    return out


def _peer_targets(h: dict[str, Any], add: Callable[[str, str, bool | None], None]) -> None:
    goal = PEER_GOAL
    for key, prompt in (
        ("single", ""),
        ("single_own_prompt", ", a system prompt of its own (no shared prefix)"),
    ):
        for route, row in h.get(key, {}).items():
            if "first_token_ratio" not in row:
                continue
            add(
                f"(i) one client{prompt}, {route}: first token and time per token within {goal} of "
                "llama_cpp.server",
                f"first token {row['first_token_ratio']:.2f}x, per token {row['per_token_ratio']:.2f}x, "
                f"whole {h['max_tokens']}-token answer {row['latency_ratio']:.2f}x",
                row["first_token_ratio"] <= goal and row["per_token_ratio"] <= goal,
            )
    for route, row in h["concurrent"].items():
        if "first_token_ratio" not in row:
            continue
        add(
            f"(i) {h['sessions']} clients at once, {route}: within {goal} of llama_cpp.server",
            f"median first token {row['first_token_ratio']:.2f}x, time for all answers "
            f"{row['aggregate_time_ratio']:.2f}x ({row['aggregate_tokens_per_s']:.1f} vs "
            f"{h['concurrent']['llama_cpp.server']['aggregate_tokens_per_s']:.1f} tokens/s)",
            row["first_token_ratio"] <= goal and row["aggregate_time_ratio"] <= goal,
        )
    chat = h["conversation"]
    for route, whole in chat["all_turns_ttft_ratio_to_peer"].items():
        last = chat["ttft_ratio_to_peer"][route][-1]
        later = chat.get("later_turns_ttft_ratio_to_peer", {}).get(route)
        hits = chat.get("enclave", {}).get(route, {}).get("kv_cache_hits", 0)
        add(
            f"(i) the {chat['turns']}-turn chat, {route}: faster than llama_cpp.server (all first tokens)",
            f"{whole:.2f}x over the chat"
            + (f", {later:.2f}x over turns 2-{chat['turns']}" if later is not None else "")
            + f", turn {chat['turns']} {last:.2f}x"
            + (f" ({hits} cache hits)" if hits else " (no cache hit)"),
            whole < 1.0,
        )


def explain_misses(results: dict[str, Any]) -> list[str]:
    """For each missed target, what bounds it — computed from the same run's numbers."""
    missed = {t["target"] for t in check_targets(results) if t["met"] is False}
    notes: list[str] = []
    b = results.get("b") or []
    at8 = next((r for r in b if r["concurrency"] == 8), None)
    if at8 and any(t.startswith("(b)") and "concurrency 8" in t for t in missed):
        cpu = at8.get("cpu_us_per_request") or {}
        total = sum(cpu.values())
        bare = sum((at8.get("bare_cpu_us_per_request") or {}).values())
        notes.append(
            f"(b) p50 at 8 clients: 8 closed-loop clients wait on each other (Little's law: p50 >= 8 / "
            f"throughput), so 2 ms would take >= 4,000 requests/s; we did {at8['requests_per_s']:.0f}/s, "
            f"the bare HTTP echo {at8['bare_requests_per_s']:.0f}/s (p50 {at8['bare_p50_ms']:.2f} ms)."
        )
        if total:
            gateway = cpu.get("gateway", 0)
            parts = ", ".join(f"{k} {v} µs" for k, v in cpu.items())
            notes.append(
                f"(b) throughput: one request costs {total} µs of CPU in all ({parts}) against {bare} µs "
                f"for the bare echo; two cores then allow at most {2e6 / total:.0f} requests/s"
                + (f", and the gateway's single event loop at most {1e6 / gateway:.0f}/s" if gateway else "")
                + ". The gateway's share is its Python HTTP stack (FastAPI middleware for tokens and limits, "
                "h11 with header deadlines, a streamed response per request); the enclave's is a thread "
                "per connection, CBOR, AES-GCM and the replay and key caches."
            )
    c = results.get("c")
    if c and any(t.startswith("(c)") for t in missed):
        notes.append("(c) bounded by bytes read per token: see the bytes-bound column.")
    d = results.get("d")
    if d and any(t.startswith("(d) 8 sessions") or "sessions: aggregate" in t for t in missed):
        notes.append(
            f"(d) CPU per generated token: enclave {d.get('enclave_cpu_ms_per_token')} ms vs llama.cpp alone "
            f"{d.get('llama_cpp_batched_cpu_ms_per_token')} ms; the rest of the gap is wall time lost to "
            "other processes on the two cores."
        )
    f = results.get("f")
    if f and any(t.startswith("(f) turn-") for t in missed):
        cached = f["modes"]["cached"]["ttft_seconds"]
        prefilled = f.get("cached_prefilled_tokens") or []
        machine = results.get("machine", {})
        if len(prefilled) > 1 and len(cached) > 1:
            notes.append(
                f"(f) with the cache each later turn prefilled {min(prefilled[1:])}-{max(prefilled[1:])} "
                f"tokens (turn 1: {prefilled[0]}; uncached, turn {f['turns']} prefills all "
                f"{f['prompt_tokens'][-1]}), so a turn's work no longer grows with the history. Its first "
                f"token still took {min(cached[1:]):.2f}-{max(cached[1:]):.2f} s over turns 2-{f['turns']} "
                f"(turn 1: {cached[0]:.2f} s) with the machine's load average going "
                f"{machine.get('load_average_1m')} -> {machine.get('load_average_1m_end')}: the ratio of two "
                "sub-second medians moves with the neighbours' load. Turn 1 starts from the public prefix "
                "(the template's system prompt, prefilled at start), and turn "
                f"{f['turns']} asks a longer question over {f['prompt_tokens'][-1]} tokens of history "
                "(attention over them is real work, for any server)"
                + (
                    f"; turn {f['turns']} over its own question asked alone: "
                    f"{f['last_turn_over_its_question_alone']:.2f}."
                    if "last_turn_over_its_question_alone" in f
                    else "."
                )
            )
    a = results.get("a")
    if a and any(t.startswith("(a)") for t in missed):
        crypto = (a.get("crypto") or {}).get("hpke_seal_open_us", {})
        notes.append(
            "(a) per request the stack adds one sealed envelope and per token one sealed frame and its relay "
            + (f"(HPKE seal + open: {max(crypto.values())} µs at most; " if crypto else "(")
            + "see below), against about a second of decoding; a run's ratio above 1.02 on one path with "
            "the other path at ~1.00 is the noise of other processes on the two shared cores."
        )
    peer = results.get("i")
    if peer and any(t.startswith("(i)") for t in missed):
        notes += _peer_notes(peer, missed)
    startup = results.get("j")
    if startup and any(t.startswith("(j)") for t in missed):
        notes.append(_startup_note(startup))
    return notes


def _peer_notes(h: dict[str, Any], missed: set[str]) -> list[str]:
    notes = []
    if any(t.startswith("(i) one client,") for t in missed):
        own = [
            f"{route} {row['first_token_ratio']:.2f}x"
            for route, row in h.get("single_own_prompt", {}).items()
            if "first_token_ratio" in row
        ]
        public = (
            h.get("single", {}).get("proxy kms", {}).get("enclave", {}).get("kv_cache_public_reused_tokens")
        )
        notes.append(
            f"(i) one client: the peer reused {h['shared_prefix_tokens']} of the {h['single_prompt_tokens']} "
            "prompt tokens from the previous client's request (the chat template's system prompt); our "
            "enclave reuses only its public prefix, the same template tokens prefilled from the model file "
            "at start"
            + (f" ({public} a request)" if public is not None else "")
            + ", never another user's (a shared prefix cache is a timing side channel on other users' "
            "prompts). Ours adds per answer a sealed request, a KMS data key (kms) or an HPKE seal "
            "(attested), the proxy's and the gateway's HTTP hops and a sealed frame per token"
            + (f"; behind a prompt nobody shares, first token {', '.join(own)}." if own else ".")
        )
    if any(t.startswith("(i) the") for t in missed):
        notes.append(
            "(i) the chat: every route names its chat (`prompt_cache_key`), the peer keeps its last "
            "request's KV state and ours the conversation's; what is left is our path's per-turn cost "
            "(see the one-client rows) against a turn's prefill of what it added."
        )
    if any(t.startswith("(i)") and "clients at once" in t for t in missed):
        settled = h["concurrent"].get("proxy kms", {}).get("enclave", {}).get("kv_cache_settle_tokens", "?")
        notes.append(
            "(i) clients at once: the peer serves one request at a time, so most clients wait for the "
            "others' whole answers, and ours batches them. Through the kms proxy each unnamed request is "
            "a new conversation (a new data key: a GenerateDataKey and an attested KMS Decrypt) sealed "
            f"one_shot, so the enclave keeps nothing for it ({settled} answer tokens prefilled again per "
            "round); the two cores are shared by the clients, the proxy, the gateway and the enclave."
        )
    return notes


def _startup_note(i: dict[str, Any]) -> str:
    phases = {p["name"]: p for p in i.get("typical_phases", [])}
    load = phases.get("enclave: model loaded, KV cache allocated")
    imports = i["median"]["ready_s"] - i["median"]["stack_start_s"]
    loaded = f"{load['end'] - load['start']:.2f} s" if load else "most of it"
    return (
        f"(j) start-up: the enclave is the critical path. Of its start, llama.cpp loading the model and "
        f"allocating and zeroing its KV cache took {loaded} (8 sequences x 8192 tokens of f16 K and V: "
        "1.5 GB touched page by page, in proportion to --batch-size x --ctx); before it, `nitro-llm up`'s "
        f"own Python and imports took {imports:.2f} s, and after it `nitro-llm ask` "
        f"{i['median']['ask_s']:.2f} s (a new process: imports, attestation, the prompt's prefill, the "
        "answer). Three Python processes start one after another on the way to the first answer, and "
        f"each waits for a core when others are busy (load average {i.get('load_average_1m')})."
    )
