"""Code shares: which columns say how much code a run saw, never guessed from a name.

Observed runs of a study export carry it: `code_frac.STAGE` (the realised share of the code
domains of the study's [groups]) and, where it was searched, `param.stages.STAGE.code_frac`.
A fit knows it through `code_domains` (recorded from the export or given to `codemix fit
--code-domains`): a stage's code share is the summed weight of those domains in the stage's
mixture. A mixture column names its domain after its last '.' (`mix.init.hq_code`:
hq_code), or is the domain's name itself. Without code domains there is no code share.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from codemix.analysis.fitfile import FitFile
from codemix.core.errors import CodemixError
from codemix.core.results import SEP, code_frac, param

__all__ = [
    "StageShare",
    "check_code_domains",
    "domain_of",
    "observed_share_columns",
    "set_shares",
    "share_range",
    "stage_shares",
]

MIX = "mix"  # the prefix of a study export's mixture columns: mix.STAGE.DOMAIN
SEARCHED = param(f"stages{SEP}")  # param.stages.STAGE.code_frac
SEARCHED_END = f"{SEP}code_frac"
REALISED = code_frac("")  # code_frac.STAGE


def domain_of(col: str) -> str:
    """'mix.init.hq_code' -> 'hq_code'; 'code' -> 'code'."""
    return col.rsplit(SEP, 1)[-1]


def check_code_domains(domains, mixture_cols) -> tuple[str, ...]:
    """`domains` as a tuple, each the domain of some mixture column (a typo would leave a
    stage without code)."""
    names = tuple(domains)
    known = {domain_of(c) for c in mixture_cols}
    unknown = [d for d in names if d not in known]
    if unknown:
        raise CodemixError(
            f"code domain(s) {', '.join(unknown)} match no mixture column (a column names its "
            f"domain after its last '.'; the fit's domains are {', '.join(sorted(known))})"
        )
    return names


@dataclass(frozen=True)
class StageShare:
    """One stage's code share: its mixture's columns and which of them are code."""

    name: str  # `code_frac.STAGE` for a study export's columns, else a description
    cols: tuple[int, ...]  # positions in the fit's mixture columns
    code: tuple[bool, ...]  # per column of the stage: a code domain?


def _stage_name(group: list[str]) -> str:
    parts = [c.split(SEP) for c in group]
    if all(len(p) == 3 and p[0] == MIX for p in parts) and len({p[1] for p in parts}) == 1:
        return code_frac(parts[0][1])
    return "code share of " + ", ".join(group)


def stage_shares(fit: FitFile) -> list[StageShare]:
    """Every stage whose mixture holds code and other domains (its share can move), in
    order; none when the fit records no code domains."""
    if not fit.code_domains:
        return []
    code = set(fit.code_domains)
    out, start = [], 0
    for group in fit.mixture_groups:
        is_code = tuple(domain_of(c) in code for c in group)
        if len(group) > 1 and any(is_code) and not all(is_code):
            cols = tuple(range(start, start + len(group)))
            out.append(StageShare(_stage_name(group), cols, is_code))
        start += len(group)
    return out


def _split(weights: np.ndarray) -> np.ndarray:
    """Proportions within a part of a mixture; equal where the part holds no weight."""
    total = weights.sum()
    return weights / total if total > 0 else np.full(len(weights), 1.0 / len(weights))


def set_shares(base: np.ndarray, shares: dict[StageShare, np.ndarray]) -> np.ndarray:
    """Copies of mixture `base`, one per value, with each stage's code share set to its
    values; within the code domains and within the others the proportions of `base` stay."""
    n = len(next(iter(shares.values())))
    w = np.tile(np.asarray(base, float), (n, 1))
    for s, v in shares.items():
        cols, code = np.asarray(s.cols), np.asarray(s.code)
        v = np.asarray(v, float)[:, None]
        w[:, cols[code]] = v * _split(base[cols[code]])[None, :]
        w[:, cols[~code]] = (1 - v) * _split(base[cols[~code]])[None, :]
    return w


def share_range(s: StageShare, base: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """The lowest and highest code share of stage `s` at which `set_shares(base, ...)` keeps
    every weight of the stage within [lo, hi] (per column: the range the runs covered)."""
    cols, code = np.asarray(s.cols), np.asarray(s.code)
    bounds = [(0.0, 1.0)]
    for j, p in zip(cols[code], _split(base[cols[code]]), strict=True):
        if p > 0:  # the weight is x * p (a column at zero stays there)
            bounds.append((lo[j] / p, hi[j] / p))
    for j, q in zip(cols[~code], _split(base[cols[~code]]), strict=True):
        if q > 0:  # the weight is (1 - x) * q
            bounds.append((1 - hi[j] / q, 1 - lo[j] / q))
    bottom, top = max(b[0] for b in bounds), min(b[1] for b in bounds)
    return bottom, max(bottom, top)


def observed_share_columns(columns, numeric=None) -> list[str]:
    """Code-share columns of a results table: the searched ones (`param.stages.STAGE.
    code_frac`) first, else the realised ones (`code_frac.STAGE`). `numeric` (a predicate
    on a column name) leaves out columns that hold no numbers, such as a searched choice."""
    numeric = numeric or (lambda c: True)
    searched = [c for c in columns if c.startswith(SEARCHED) and c.endswith(SEARCHED_END)]
    searched = [c for c in searched if numeric(c)]
    return searched or [c for c in columns if c.startswith(REALISED) and numeric(c)]
