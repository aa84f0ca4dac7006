"""Results tables: one row per run, columns for mixture weights, size, tokens and metrics.

Reads CSV or parquet with polars, joins a mixture file with a metrics file on a key
(RegMix ships them apart, joined on `index`), resolves column selections written as
comma-separated names or a prefix followed by `*`, and validates before any fitting:
a missing file or column, an empty table, a non-numeric column or a row whose weights do
not sum to one is a `CodemixError` that names the file, the column or the row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from analysis.layout import as_groups, split_names
from codemix.errors import CodemixError

__all__ = [
    "ResultsTable",
    "join_tables",
    "load_results",
    "read_table",
    "resolve_columns",
]

WEIGHT_SUM_TOL = 0.01  # RegMix's released weights are rounded to 3 decimals: sums 0.996-1.003


def read_table(path: str | Path) -> pl.DataFrame:
    """Read a CSV or parquet file (by extension; anything else is read as CSV)."""
    path = Path(path)
    if not path.is_file():
        raise CodemixError(f"results table {path} does not exist")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            df = pl.read_parquet(path)
        else:
            df = pl.read_csv(path, infer_schema_length=10_000)
    except (pl.exceptions.PolarsError, OSError) as e:
        raise CodemixError(f"cannot read {path}: {e}") from e
    if df.height == 0:
        raise CodemixError(f"results table {path} has no rows")
    return df


def join_tables(paths: list[str | Path], on: str = "index") -> pl.DataFrame:
    """Inner-join several tables on the key column `on` (e.g. RegMix mixture + loss files)."""
    if not paths:
        raise CodemixError("no results table given")
    frames = [read_table(p) for p in paths]
    if len(frames) == 1:
        return frames[0]
    for p, f in zip(paths, frames, strict=True):
        if on not in f.columns:
            raise CodemixError(f"{p} has no column {on!r} to join on")
    out = frames[0]
    for p, f in zip(paths[1:], frames[1:], strict=True):
        dup = (set(out.columns) & set(f.columns)) - {on}
        if dup:
            raise CodemixError(f"{p} repeats column(s) {', '.join(sorted(dup))}; cannot join")
        out = out.join(f, on=on, how="inner", maintain_order="left")
    if out.height == 0:
        raise CodemixError(f"joining {', '.join(map(str, paths))} on {on!r} left no rows")
    return out


def resolve_columns(spec: str | list[str], columns: list[str], source: str = "table") -> list[str]:
    """Columns named by `spec`: comma-separated names and/or prefixes ending in `*`."""
    parts = spec if isinstance(spec, list) else spec.split(",")
    parts = [p.strip() for p in parts if p.strip()]
    if not parts:
        raise CodemixError(f"empty column selection {spec!r}")
    out: list[str] = []
    for part in parts:
        if part.endswith("*"):
            prefix = part[:-1]
            hits = [c for c in columns if c.startswith(prefix)]
            if not hits:
                raise CodemixError(f"{source} has no column starting with {prefix!r}")
        elif part in columns:
            hits = [part]
        else:
            raise CodemixError(f"{source} has no column {part!r}")
        out.extend(h for h in hits if h not in out)
    return out


def _numeric(df: pl.DataFrame, cols: list[str], source: str) -> np.ndarray:
    for c in cols:
        if not df.schema[c].is_numeric():
            raise CodemixError(f"{source}: column {c!r} is not numeric ({df.schema[c]})")
        if df[c].null_count():
            raise CodemixError(f"{source}: column {c!r} has {df[c].null_count()} missing values")
    arr = df.select(cols).to_numpy().astype(float)
    bad = ~np.isfinite(arr)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise CodemixError(f"{source}: row {r} column {cols[c]!r} is not finite")
    return arr


@dataclass(frozen=True)
class ResultsTable:
    """Validated arrays from a results table, ready to fit."""

    source: str
    mixture_cols: tuple[str, ...]
    metric_cols: tuple[str, ...]
    weights: np.ndarray  # (runs, domains), rows sum to ~1
    metrics: np.ndarray  # (runs, metrics)
    size_col: str | None = None
    tokens_col: str | None = None
    size: np.ndarray | None = None  # (runs,) parameters
    tokens: np.ndarray | None = None  # (runs,) tokens seen
    groups: tuple[int, ...] | None = None  # one mixture per stage (analysis.layout); None: one

    def __post_init__(self) -> None:
        n = self.weights.shape[0]
        if self.metrics.shape[0] != n:
            raise CodemixError(f"{self.source}: metrics and weights differ in row count")
        for name, v in (("size", self.size), ("tokens", self.tokens)):
            if v is not None and (v.shape != (n,) or np.any(v <= 0)):
                raise CodemixError(f"{self.source}: {name} column must be positive in every row")

    @property
    def n_runs(self) -> int:
        return self.weights.shape[0]

    def metric(self, name: str) -> np.ndarray:
        return self.metrics[:, self.metric_cols.index(name)]

    def summary(self) -> dict:
        """Training-data summary for FIT.json."""
        out: dict = {"source": self.source, "n_runs": self.n_runs}
        out["weights_min"] = self.weights.min(0).round(6).tolist()
        out["weights_max"] = self.weights.max(0).round(6).tolist()
        for name, v in (("size", self.size), ("tokens", self.tokens)):
            if v is not None:
                out[f"{name}_values"] = sorted({float(x) for x in np.unique(v)})[:64]
        return out


def check_weights(w: np.ndarray, source: str, tol: float = WEIGHT_SUM_TOL) -> None:
    """Every row of `w` is non-negative and sums to 1 within `tol`."""
    if np.any(w < -1e-9):
        r, c = np.argwhere(w < -1e-9)[0]
        raise CodemixError(f"{source}: row {r} has a negative mixture weight ({w[r, c]})")
    s = w.sum(1)
    bad = np.flatnonzero(np.abs(s - 1.0) > tol)
    if bad.size:
        r = int(bad[0])
        raise CodemixError(
            f"{source}: mixture weights of row {r} sum to {s[r]:.4g}, not 1 "
            f"({bad.size} such row(s); tolerance {tol})"
        )


def mixture_array(
    df: pl.DataFrame, cols: list[str], source: str, groups: tuple[int, ...] | None = None
) -> np.ndarray:
    """Validated weights of `cols` in `df` (used by fit and predict alike); with `groups`,
    each group of columns (one stage's mixture) sums to one on its own."""
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise CodemixError(f"{source} has no column {missing[0]!r}")
    w = _numeric(df, cols, source)
    names = split_names(cols, groups)
    start = 0
    for group in names:
        part = w[:, start : start + len(group)]
        start += len(group)
        if len(group) == 1 and len(names) > 1:
            continue  # a free stage variable, not a mixture
        where = source if len(names) == 1 else f"{source} (columns {', '.join(group)})"
        try:
            check_weights(part, where)
        except CodemixError as e:
            sums = part.sum(1)
            if len(names) == 1 and sums.min() > 1.5 and np.allclose(sums, np.round(sums), 0, 0.02):
                raise CodemixError(
                    f"{e}; if these columns hold several stages' mixtures, give "
                    "--mixture-cols once per stage"
                ) from None
            raise
    return w


def load_results(
    paths: str | Path | list[str | Path],
    mixture_cols: str | list[str],
    metrics: list[str],
    size_col: str | None = None,
    tokens_col: str | None = None,
    on: str = "index",
    stage_cols: str | list[str] | None = None,
) -> ResultsTable:
    """Read (and join) results, resolve the column selections and validate them.

    `mixture_cols` is one selection (comma-separated names and/or PREFIX*) or a list of
    them, one per stage: each stage's weights must sum to one on their own. `stage_cols`
    selects free stage variables (e.g. the cooldown's share of the tokens), each its own
    one-column group after the mixtures.
    """
    paths = [paths] if isinstance(paths, str | Path) else list(paths)
    df = join_tables(paths, on=on)
    source = " + ".join(map(str, paths))
    specs = [mixture_cols] if isinstance(mixture_cols, str) else list(mixture_cols)
    per_group = [resolve_columns(spec, df.columns, source) for spec in specs]
    mix = [c for g in per_group for c in g]
    if len(set(mix)) < len(mix):
        dup = sorted({c for c in mix if mix.count(c) > 1})
        raise CodemixError(f"column(s) {', '.join(dup)} are in more than one mixture group")
    if any(len(g) < 2 for g in per_group):
        one = next(g for g in per_group if len(g) < 2)
        raise CodemixError(
            f"mixture group {', '.join(one)} has one column; a stage's mixture needs 2+ "
            "(a single stage variable goes in --stage-cols)"
        )
    if stage_cols:
        free = [
            c
            for spec in ([stage_cols] if isinstance(stage_cols, str) else stage_cols)
            for c in resolve_columns(spec, df.columns, source)
        ]
        both = sorted(set(free) & set(mix))
        if both:
            raise CodemixError(f"column(s) {', '.join(both)} are both mixture and stage columns")
        per_group += [[c] for c in dict.fromkeys(free)]
        mix += list(dict.fromkeys(free))
    groups = as_groups([len(g) for g in per_group])
    if not metrics:
        raise CodemixError("no metric given")
    mets = [m for spec in metrics for m in resolve_columns(spec, df.columns, source)]
    overlap = set(mix) & set(mets)
    if overlap:
        raise CodemixError(f"column(s) {', '.join(sorted(overlap))} are both mixture and metric")
    w = mixture_array(df, mix, source, groups)
    y = _numeric(df, mets, source)
    size = (
        _numeric(df, [resolve_columns(size_col, df.columns, source)[0]], source)[:, 0]
        if size_col
        else None
    )
    tokens = (
        _numeric(df, [resolve_columns(tokens_col, df.columns, source)[0]], source)[:, 0]
        if tokens_col
        else None
    )
    return ResultsTable(
        source=source,
        mixture_cols=tuple(mix),
        metric_cols=tuple(mets),
        weights=w,
        metrics=y,
        size_col=size_col,
        tokens_col=tokens_col,
        size=size,
        tokens=tokens,
        groups=groups,
    )
