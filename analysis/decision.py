"""Decision accuracy (DataDecide, Magnusson et al. 2025): of all pairs of mixtures trained
at two sizes, the share that the smaller size ranks the same way as the larger one.

It answers "would the proxies have picked the same mixture?" without any fitted law. Ties
at the larger size are left out (nothing to get right); a tie at the smaller size counts one
half. Runs of one mixture at one size (seeds) are averaged first. Where a mixture was run
twice at a size, the agreement of the two replicates is the noise ceiling: no pair of sizes
can be expected to agree more often than two seeds of the same size do.
"""

from __future__ import annotations

import re
from itertools import combinations

import numpy as np

__all__ = ["decision_accuracy", "describe", "pair_agreement", "rising_warning"]

RISE = 0.02  # a mixture's loss "rises" with size past this share: above text's seed spread


def pair_agreement(small: np.ndarray, large: np.ndarray) -> tuple[float, int]:
    """(share of pairs ranked alike, pairs counted) for two vectors over the same mixtures."""
    i, j = np.triu_indices(len(small), k=1)
    d_small = np.sign(small[i] - small[j])
    d_large = np.sign(large[i] - large[j])
    counted = d_large != 0
    n = int(counted.sum())
    if n == 0:
        return float("nan"), 0
    score = (d_small == d_large) + 0.5 * (d_small == 0)
    return float(score[counted].mean()), n


def decision_accuracy(
    weights: np.ndarray, size: np.ndarray, y: np.ndarray, keys: list | None = None
) -> list[dict]:
    """One record per pair of sizes (smaller first) with 2+ mixtures run at both, then one
    per size with replicated mixtures (`small` == `large`: seed against seed).

    Runs are matched by `keys` (what each trial asked for, e.g. its param.* values), else by
    their realised weights to 1e-3 (sampling makes the realised mixture of one trial differ
    a little between sizes)."""
    if keys is None:
        keys = [tuple(np.round(w, 3)) for w in weights]
    runs: dict[tuple[float, tuple], list[float]] = {}
    for k, n, v in zip(keys, size, y, strict=True):
        if np.isfinite(v):
            runs.setdefault((float(n), k), []).append(float(v))
    sizes = sorted({n for n, _ in runs})
    out = []
    for a, b in combinations(sizes, 2):
        common = sorted({k for n, k in runs if n == a} & {k for n, k in runs if n == b})
        if len(common) < 2:
            continue
        ya = np.array([np.mean(runs[a, k]) for k in common])
        yb = np.array([np.mean(runs[b, k]) for k in common])
        acc, pairs = pair_agreement(ya, yb)
        rise = yb / ya - 1.0
        out.append(
            _record(a, b, acc, pairs, len(common))
            | {"rising": int((rise > RISE).sum()), "rise_max": float(rise.max())}
        )
    for n in sizes:
        twice = sorted(k for m, k in runs if m == n and len(runs[m, k]) >= 2)
        if len(twice) < 2:
            continue
        first = np.array([runs[n, k][0] for k in twice])
        second = np.array([runs[n, k][1] for k in twice])
        acc, pairs = pair_agreement(second, first)
        out.append(_record(n, n, acc, pairs, len(twice)))
    return out


def _record(small: float, large: float, acc: float, pairs: int, mixtures: int) -> dict:
    return {"small": small, "large": large, "accuracy": acc, "pairs": pairs, "mixtures": mixtures}


def describe(records: list[dict], fmt=lambda n: f"{n:.3g}") -> list[str]:
    """Printable lines: '1.9e6 vs 1e7: 87 % of 15 pairs', seeds marked."""
    lines = []
    for r in records:
        what = (
            f"{fmt(r['small'])} seed vs seed"
            if r["small"] == r["large"]
            else f"{fmt(r['small'])} vs {fmt(r['large'])}"
        )
        share = f"{r['accuracy']:.0%} of {r['pairs']} pairs"
        lines.append(f"{what}: {share} ({r['mixtures']} mixtures)")
    return lines


def rising_warning(metric: str, records: list[dict], fmt=lambda n: f"{n:.3g}") -> str:
    """'the loss rises with size ...' where some mixtures lose more at the ladder's largest
    size than at the one below it; '' where none does, or `metric` is not named as a loss
    (bpb.text, loss.code, nl_loss: an accuracy that rises is no warning)."""
    if not set(re.split(r"[._\-]", metric.lower())) & {"bpb", "loss", "nll", "ppl"}:
        return ""
    pairs = [r for r in records if r["small"] != r["large"] and "rising" in r]
    if not pairs:
        return ""
    top = max(r["large"] for r in pairs)
    below = [r for r in pairs if r["large"] == top]
    r = max(below, key=lambda r: r["small"])
    if not r["rising"]:
        return ""
    return (
        f"the loss rises with size for {r['rising']} of {r['mixtures']} mixtures from "
        f"{fmt(r['small'])} to {fmt(r['large'])} (by more than {RISE:.0%}, up to "
        f"{r['rise_max']:+.0%}). The largest proxies do worse there than smaller ones: they "
        "repeat or forget a domain, have too few tokens for their size, or (a small rise) seed "
        "noise. One size up the level is least sure for such mixtures (codemix's ladders: 1-3 "
        "% off where 2 of 20 rose by up to 6 %, 8-22 % where 12 of 20 rose by up to 52 %; "
        'benchmarks/RESULTS.md, "One rung further"). Rank by it and confirm the level; where '
        "the runs repeat a domain, compare a fit with --law "
        "joint_data+overfit+overfit_n+overfit_fall, whose overfitting term can fall again with "
        "N (the contest, holding the largest size out, cannot choose it)"
    )
