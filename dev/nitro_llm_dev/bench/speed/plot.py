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
    return made
