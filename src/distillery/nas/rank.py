"""Spearman's rank correlation, and its top-k variant that FTD Table 5 reports."""
from __future__ import annotations

import math
from typing import Sequence


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks in ascending order; tied values share the mean of their ranks (as scipy.stats.rankdata)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    result = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for i in order[start:end + 1]:
            result[i] = (start + end) / 2 + 1
        start = end + 1
    return result


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation of the ranks of x and y; NaN when either is constant (no ranking to compare)."""
    if len(x) != len(y):
        raise ValueError(f"spearman needs paired values, got {len(x)} and {len(y)}")
    if len(x) < 2:
        raise ValueError(f"spearman needs at least 2 pairs, got {len(x)}")
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    var = sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(var) if var > 0 else math.nan


def top_k_spearman(proxy: dict[str, float], truth: dict[str, float], k: int | None) -> tuple[float, int]:
    """Spearman between proxy and true accuracies of the k architectures the proxy ranks highest (None: all),
    and how many were used (fewer than k when the search covered fewer).

    FTD (after DC) correlates "the rankings of the top 5, 10 and 20 architectures" without saying whose top;
    we take the proxy's top k, the ones a search with the proxy would keep. Ties go to the earlier name.
    """
    missing = sorted(set(proxy) ^ set(truth))
    if missing:
        raise ValueError(f"proxy and reference accuracies cover different architectures: {', '.join(missing[:5])}")
    best = sorted(proxy, key=lambda name: (-proxy[name], name))
    chosen = best if k is None else best[:k]
    if len(chosen) < 2:
        return math.nan, len(chosen)
    return spearman([proxy[n] for n in chosen], [truth[n] for n in chosen]), len(chosen)
