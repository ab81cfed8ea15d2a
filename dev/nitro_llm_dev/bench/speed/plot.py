"""PNG plots for BENCHMARKS.md (matplotlib, from the ``bench`` extra; without it, no plots)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def available() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def _bars(path: Path, title: str, labels: list[str], values: list[float], ylabel: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 3.6), dpi=110)
    bars = ax.bar(range(len(values)), values, color=["#7a7a7a"] + ["#2b6cb0"] * (len(values) - 1))
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_all(results: dict[str, Any], out_dir: Path) -> list[Path]:
    if not available():
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    if a := results.get("a"):
        rows = a["rows"]
        made.append(
            _bars(
                out_dir / "overhead.png",
                f"(a) {a['max_tokens']} tokens, greedy: latency (s)",
                [r["path"].replace(" (in process)", "").replace("full stack, ", "stack, ") for r in rows],
                [r["latency_s"] for r in rows],
                "seconds (median)",
            )
        )
    if b := results.get("b"):
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=110)
        levels = [r["concurrency"] for r in b]
        left.plot(levels, [r["p50_ms"] for r in b], "o-", label="ours p50")
        left.plot(levels, [r["p99_ms"] for r in b], "o--", label="ours p99")
        left.plot(levels, [r["bare_p50_ms"] for r in b], "s:", color="#7a7a7a", label="bare HTTP p50")
        left.set_xlabel("concurrent clients")
        left.set_ylabel("ms per request")
        left.set_xscale("log", base=2)
        left.legend(fontsize=8)
        right.plot(levels, [r["requests_per_s"] for r in b], "o-", label="ours")
        right.plot(levels, [r["bare_requests_per_s"] for r in b], "s:", color="#7a7a7a", label="bare HTTP")
        right.set_xlabel("concurrent clients")
        right.set_ylabel("requests/s")
        right.set_xscale("log", base=2)
        right.legend(fontsize=8)
        fig.suptitle("(b) protocol path, echo engine", fontsize=10)
        fig.tight_layout()
        path = out_dir / "protocol.png"
        fig.savefig(path)
        plt.close(fig)
        made.append(path)
    if c := results.get("c"):
        rows = c["rows"]
        made.append(
            _bars(
                out_dir / "seed_stack.png",
                f"(c) Bloom-560m shape, {c['threads']} thread(s): decode tokens/s",
                [
                    r["engine"].replace(" (seed)", "").replace(" (ours)", "").replace("llama.cpp GGUF ", "")
                    for r in rows
                ],
                [r["tokens_per_s"] for r in rows],
                "tokens/s",
            )
        )
    if d := results.get("d"):
        n = d["sessions"]
        made.append(
            _bars(
                out_dir / "many_users.png",
                f"(d) {n} sessions, {d['threads']} thread(s): tokens/s",
                ["stack, 1 session", f"stack, {n} sessions", "llama.cpp, 1 seq", f"llama.cpp, {n} seqs"],
                [
                    d["one_session_tps"],
                    d["aggregate_tps"],
                    d["llama_cpp_one_sequence_tps"],
                    d["llama_cpp_batched_tps"],
                ],
                "tokens/s (aggregate)",
            )
        )
    if results.get("f") or results.get("i"):
        made.append(_chat_turns(results, out_dir / "chat_turns.png"))
    if h := results.get("i"):
        made.append(_peer_ratios(h, out_dir / "peer.png"))
    if (i := results.get("j")) and i.get("typical_phases"):
        made.append(_startup(i, out_dir / "startup.png"))
    return made


_ROUTE_STYLE: dict[str, dict[str, Any]] = {
    "llama_cpp.server": {"color": "#7a7a7a", "marker": "s", "linestyle": "-", "linewidth": 2.5},
    "proxy kms": {"color": "#d69e2e", "marker": "o", "linestyle": "--"},
    "proxy attested": {"color": "#c05621", "marker": "o", "linestyle": "--"},
    "direct kms": {"color": "#2b6cb0", "marker": "^", "linestyle": "-"},
    "direct attested": {"color": "#2c7a7b", "marker": "^", "linestyle": "-"},
}


def _chat_turns(results: dict[str, Any], path: Path) -> Path:
    """Time to first token per turn: (f) with and without the enclave's cache; (i) beside the peer."""
    import matplotlib.pyplot as plt

    f, h = results.get("f"), results.get("i")
    panels = [x for x in (f, h) if x]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), dpi=110, squeeze=False)
    ax_iter = iter(axes[0])
    if f:
        ax = next(ax_iter)
        turns = list(range(1, f["turns"] + 1))
        labels = {
            "uncached": "no cache",
            "cached": "cached (turns spaced)",
            "cached_back_to_back": "cached, back to back",
        }
        for mode in [m for m in labels if m in f["modes"]]:  # the same order and colours every time
            ax.plot(turns, f["modes"][mode]["ttft_seconds"], "o-", label=labels[mode])
        ax.set_title("(f) our enclave, with and without its KV cache", fontsize=9)
        _turn_axes(ax)
    if h:
        ax = next(ax_iter)
        chat = h["conversation"]
        turns = list(range(1, chat["turns"] + 1))
        for route in chat["routes"]:
            style = _ROUTE_STYLE.get(route, {})
            label = f"{route} (peer)" if route == "llama_cpp.server" else route
            label += " — no cache" if route.startswith("proxy") else ""
            ax.plot(turns, chat["ttft_seconds"][route], label=label, **style)
        ax.set_title("(i) beside llama_cpp.server, same model and threads", fontsize=9)
        _turn_axes(ax)
    fig.suptitle("Time to first token per turn of one chat (whole history sent each turn)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _turn_axes(ax: Any) -> None:
    ax.set_xlabel("turn")
    ax.set_ylabel("time to first token (s, median)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    ax.spines[["top", "right"]].set_visible(False)


def _peer_ratios(h: dict[str, Any], path: Path) -> Path:
    """Ours over the peer's, as times, per route and measure; the goal lines at 1.05 and 1."""
    import matplotlib.pyplot as plt

    measures = [
        ("1 client:\nfirst token", lambda r: h["single"].get(r, {}).get("first_token_ratio")),
        ("1 client:\nper token", lambda r: h["single"].get(r, {}).get("per_token_ratio")),
        (
            "1 client, own\nsystem prompt:\nfirst token",
            lambda r: h.get("single_own_prompt", {}).get(r, {}).get("first_token_ratio"),
        ),
        (
            f"{h['sessions']} clients:\nfirst token",
            lambda r: h["concurrent"].get(r, {}).get("first_token_ratio"),
        ),
        (
            f"{h['sessions']} clients:\nall answers",
            lambda r: h["concurrent"].get(r, {}).get("aggregate_time_ratio"),
        ),
        ("chat: all\nfirst tokens", lambda r: h["conversation"]["all_turns_ttft_ratio_to_peer"].get(r)),
    ]
    routes = [r for r in h["conversation"]["routes"] if r != "llama_cpp.server"]
    fig, ax = plt.subplots(figsize=(10, 4), dpi=110)
    width = 0.8 / len(routes)
    for k, route in enumerate(routes):
        xs, ys = [], []
        for m, (_label, value) in enumerate(measures):
            v = value(route)
            if v is not None:
                xs.append(m + (k - (len(routes) - 1) / 2) * width)
                ys.append(v)
        bars = ax.bar(xs, ys, width, label=route, color=_ROUTE_STYLE.get(route, {}).get("color"))
        ax.bar_label(bars, labels=[f"{y:.2f}" for y in ys], fontsize=6)
    ax.axhline(1.05, color="#c53030", linewidth=1, linestyle=":", label="goal for single answers (1.05)")
    ax.axhline(1.0, color="#333333", linewidth=0.8)
    ax.set_xticks(range(len(measures)), [m[0] for m in measures], fontsize=8)
    ax.set_ylabel("ours / llama_cpp.server (time)")
    ax.set_yscale("log")
    ax.set_title("(i) our confidential path over llama_cpp.server: below 1 is faster", fontsize=10)
    ax.legend(fontsize=7)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _startup(i: dict[str, Any], path: Path) -> Path:
    """The restart nearest the median, phase by phase on one time axis (the phases overlap)."""
    import matplotlib.pyplot as plt

    med = i["median"]
    typical = min(i["restarts"], key=lambda r: abs(r["first_answer_s"] - med["first_answer_s"]))
    before = typical["ready_s"] - typical["stack_start_s"]  # 'up' running before its stack starts
    phases = [
        {"name": "`nitro-llm up`: Python, imports", "start": -before, "end": 0.0},
        *i["typical_phases"],
        {"name": "`nitro-llm ask`: first answer", "start": typical["stack_start_s"],
         "end": typical["stack_start_s"] + typical["ask_s"]},
    ]  # fmt: skip
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(phases) + 1.4), dpi=110)
    for row, p in enumerate(phases):
        color = "#2b6cb0" if p["name"].startswith("enclave:") else "#7a7a7a"
        color = "#c05621" if p["name"].startswith("`") else color
        ax.barh(row, p["end"] - p["start"], left=p["start"], color=color)
    ax.set_yticks(range(len(phases)), [p["name"] for p in phases], fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0, color="#333333", linewidth=0.6)
    ax.set_xlabel("seconds from the start of the stack (the restart nearest the median)")
    ax.set_title(
        f"(j) start-up: stack ready {med['stack_start_s']:.2f} s; "
        f"`up` to the first answer {med['first_answer_s']:.2f} s",
        fontsize=9,
    )
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
