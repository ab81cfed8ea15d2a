"""Small statistics for benchmark samples (no numpy: the default bench needs no heavy packages)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) — what a reader expects "p99 of 200 samples" to mean."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples) if samples else math.nan


def ratio(ours: float, baseline: float) -> float:
    return ours / baseline if baseline > 0 else math.nan
