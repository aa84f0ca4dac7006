"""Results tables: one row per run, columns for mixture weights, size, tokens and metrics.

Reads CSV or parquet with polars, joins a mixture file with a metrics file on a key
(RegMix ships them apart, joined on `index`), resolves column selections written as
comma-separated names or a prefix followed by `*`, and validates before any fitting:
a missing file or column, an empty table, a non-numeric column or a row whose weights do
not sum to one is a `CodemixError` that names the file, the column or the row.

A study export (`codemix study export`) also holds rows a fit must not use: those of
failed trials and failed runs. `usable_rows` states the rule; `load_results` applies it and
keeps the counts of what it left out.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from codemix.analysis.datalaw import RunData, column_domains, group_stages, tokens_after
from codemix.analysis.layout import as_groups, split_names
from codemix.core.errors import CodemixError
from codemix.core.results import CODE_DOMAINS, SEP, UNIQUE_CAPS

__all__ = [
    "ResultsTable",
    "join_tables",
    "load_results",
    "read_table",
    "resolve_columns",
    "split_domains",
    "usable_rows",
]

VOCAB_SIZE = "vocab_size"  # a study export's column (codemix.core.results.RUN_COLUMNS)
WEIGHT_SUM_TOL = 0.01  # RegMix's released weights are rounded to 3 decimals: sums 0.996-1.003
# pruned trials (successive halving) stopped early, but their runs at the smaller sizes count
USABLE_STATES = ("complete", "pruned")


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


def table_columns(path: str | Path) -> list[str]:
    """A CSV or parquet file's column names, from its header alone."""
    path = Path(path)
    if not path.is_file():
        raise CodemixError(f"results table {path} does not exist")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pl.scan_parquet(path).collect_schema().names()
        return pl.scan_csv(path, infer_schema_length=0).collect_schema().names()
    except (pl.exceptions.PolarsError, OSError) as e:
        raise CodemixError(f"cannot read {path}: {e}") from e


def stage_mixtures(columns: list[str]) -> list[str]:
    """`['mix.init.*', 'mix.cooldown.*']`: one mixture selection per stage of a study
    export's `mix.STAGE.DOMAIN` columns, stages in the order the table has them."""
    stages = [c.split(".")[1] for c in columns if c.startswith("mix.") and c.count(".") == 2]
    return [f"mix.{st}.*" for st in dict.fromkeys(stages)]


def join_tables(paths: list[str | Path], on: str | None = "index") -> pl.DataFrame:
    """Inner-join several tables on the key column `on` (e.g. RegMix mixture + loss files);
    with `on=None`, stack their rows (a ladder and its extra arms, exported from several
    studies: a column one table lacks is empty in its rows)."""
    if not paths:
        raise CodemixError("no results table given")
    frames = [read_table(p) for p in paths]
    if len(frames) == 1:
        return frames[0]
    if on is None:
        try:
            return pl.concat(frames, how="diagonal_relaxed")
        except pl.exceptions.PolarsError as e:
            names = ", ".join(map(str, paths))
            raise CodemixError(f"cannot stack {names}: a column differs in kind ({e})") from None
    for p, f in zip(paths, frames, strict=True):
        if on not in f.columns:
            raise CodemixError(
                f"{p} has no column {on!r} to join on (to fit the rows of several study "
                "exports together, stack them: --stack)"
            )
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


def _trial_reason(state: str | None) -> str:
    if not state:
        return "of trials without a state"
    return "of failed trials" if state == "fail" else f"of {state} trials"


def _run_reason(status: str | None) -> str:
    return f"{status} runs" if status else "runs without a status"


def _counted(reasons: dict[str, int]) -> str:
    """'3 of failed trials, 1 failed run'."""
    return ", ".join(
        f"{n} {r[:-1] if n == 1 and r.endswith(' runs') else r}" for r, n in reasons.items()
    )


def usable_rows(df: pl.DataFrame, source: str = "table") -> tuple[np.ndarray, dict[str, int]]:
    """Which rows of a results table a fit may use, and how many were left out by reason.

    A row is kept when its `run_status` is "completed" and its trial's `state` is
    "complete" or "pruned" (pruned trials under successive halving have valid runs at the
    smaller sizes). Left out are rows of failed trials (also those interrupted and retried
    under a new trial number: the old number is "fail"), of trials still running or
    waiting, and failed runs; a row is counted under its trial's reason first. A table
    without these columns (e.g. RegMix's) keeps every row. Returns the mask of kept rows
    and e.g. {"of failed trials": 3, "failed runs": 2}; no row left is an error.
    """
    reasons: list[tuple[int, str] | None] = [None] * df.height  # (rule, reason) per row
    rules = (("state", USABLE_STATES, _trial_reason), ("run_status", ("completed",), _run_reason))
    for rule, (col, ok, why) in enumerate(rules):
        if col not in df.columns:
            continue
        values = df[col].cast(pl.String).str.strip_chars().str.to_lowercase().to_list()
        for i, v in enumerate(values):
            if reasons[i] is None and v not in ok:
                reasons[i] = (rule, why(v))
    keep = np.array([r is None for r in reasons], bool)
    counts = Counter(r for r in reasons if r is not None)
    # trials' reasons before runs', each most frequent first
    left_out = {r: n for (_, r), n in sorted(counts.items(), key=lambda kv: (kv[0][0], -kv[1]))}
    if not keep.any():
        raise CodemixError(
            f"{source}: none of its {df.height} rows is usable ({_counted(left_out)}); a fit needs "
            "completed runs (column 'run_status') of complete or pruned trials (column 'state')"
        )
    return keep, left_out


def _one_value(df: pl.DataFrame, col: str):
    """The value `col` holds on every row, or None: no such column, missing values, or
    several values (then no one value describes the runs)."""
    if col not in df.columns or df[col].null_count():
        return None
    values = df[col].unique().to_list()
    return values[0] if len(values) == 1 else None


def trial_keys(df: pl.DataFrame) -> list[str] | None:
    """What each row's trial asked for (its param.* values, and the domains its spec capped:
    arms of one grid stacked from several studies ask for the same values), to match one
    mixture's runs across sizes and seeds; None for a table without param.* columns."""
    asked = sorted(c for c in df.columns if c.startswith("param" + SEP))
    if not asked:
        return None
    asked += sorted(c for c in df.columns if c.split(SEP)[0] in UNIQUE_CAPS)
    return [repr(r) for r in df.select(asked).iter_rows()]


def split_domains(text) -> tuple[str, ...] | None:
    """'web_code,hq_code' -> ('web_code', 'hq_code'); None for nothing named."""
    names = tuple(d.strip() for d in str(text or "").split(",") if d.strip())
    return names or None


def _numeric(
    df: pl.DataFrame, cols: list[str], source: str, rows: np.ndarray | None = None
) -> np.ndarray:
    """The columns as floats; `rows` names each row in errors (its row in the file)."""
    for c in cols:
        if not df.schema[c].is_numeric():
            raise CodemixError(f"{source}: column {c!r} is not numeric ({df.schema[c]})")
        if df[c].null_count():
            raise CodemixError(f"{source}: column {c!r} has {df[c].null_count()} missing values")
    arr = df.select(cols).to_numpy().astype(float)
    bad = ~np.isfinite(arr)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        r = r if rows is None else rows[r]
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
    left_out: dict[str, int] = field(default_factory=dict)  # rows not used, by reason
    vocab_size: int | None = None  # of every run, where the table says (a study export does)
    code_domains: tuple[str, ...] | None = None  # what the study's [groups] counted as code
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # other columns asked for
    keys: list[str] | None = None  # what a trial asked for (param.* of a study export), per run
    # per run and domain: tokens trained on and their epochs (the data-constrained law), and
    # each mixture group's share of a run's tokens; None where the table cannot say
    run_data: RunData | None = None
    stage_fracs: np.ndarray | None = None  # (runs, groups)

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

    def left_out_line(self) -> str:
        """E.g. 'left out 5 of 41 rows: 3 of failed trials, 2 failed runs'; '' if none."""
        n = sum(self.left_out.values())
        if not n:
            return ""
        return f"left out {n} of {self.n_runs + n} rows: {_counted(self.left_out)}"

    def summary(self) -> dict:
        """Training-data summary for FIT.json."""
        out: dict = {"source": self.source, "n_runs": self.n_runs}
        if self.left_out:
            out["rows_left_out"] = dict(self.left_out)
        out["weights_min"] = self.weights.min(0).round(6).tolist()
        out["weights_max"] = self.weights.max(0).round(6).tolist()
        for name, v in (("size", self.size), ("tokens", self.tokens)):
            if v is not None:
                out[f"{name}_values"] = sorted({float(x) for x in np.unique(v)})[:64]
        return out


def check_weights(
    w: np.ndarray, source: str, tol: float = WEIGHT_SUM_TOL, rows: np.ndarray | None = None
) -> None:
    """Every row of `w` is non-negative and sums to 1 within `tol` (`rows`: names in errors)."""
    at = np.arange(len(w)) if rows is None else rows
    if np.any(w < -1e-9):
        r, c = np.argwhere(w < -1e-9)[0]
        raise CodemixError(f"{source}: row {at[r]} has a negative mixture weight ({w[r, c]})")
    s = w.sum(1)
    bad = np.flatnonzero(np.abs(s - 1.0) > tol)
    if bad.size:
        r = int(bad[0])
        raise CodemixError(
            f"{source}: mixture weights of row {at[r]} sum to {s[r]:.4g}, not 1 "
            f"({bad.size} such row(s); tolerance {tol})"
        )


def mixture_array(
    df: pl.DataFrame,
    cols: list[str],
    source: str,
    groups: tuple[int, ...] | None = None,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """Validated weights of `cols` in `df` (used by fit and predict alike); with `groups`,
    each group of columns (one stage's mixture) sums to one on its own. `rows` gives each
    row's number in the file, for errors, where rows were left out before."""
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise CodemixError(f"{source} has no column {missing[0]!r}")
    w = _numeric(df, cols, source, rows)
    names = split_names(cols, groups)
    start = 0
    for group in names:
        part = w[:, start : start + len(group)]
        start += len(group)
        if len(group) == 1 and len(names) > 1:
            continue  # a free stage variable, not a mixture
        where = source if len(names) == 1 else f"{source} (columns {', '.join(group)})"
        try:
            check_weights(part, where, rows=rows)
        except CodemixError as e:
            sums = part.sum(1)
            if len(names) == 1 and sums.min() > 1.5 and np.allclose(sums, np.round(sums), 0, 0.02):
                raise CodemixError(
                    f"{e}; if these columns hold several stages' mixtures, give "
                    "--mixture-cols once per stage"
                ) from None
            shares = [c for c in group if c.split(".")[0] == "code_frac"]
            if len(names) == 1 and len(shares) > 1:
                stages = [c.split(".", 1)[1] for c in shares]
                raise CodemixError(
                    f"{e}; {', '.join(shares)} are each one stage's code share, not parts of "
                    "one mixture: give each stage's mixture with its own flag, "
                    + " ".join(f"--mixture-cols 'mix.{st}.*'" for st in stages)
                ) from None
            raise
    return w


def load_results(
    paths: str | Path | list[str | Path],
    mixture_cols: str | list[str],
    metrics: list[str],
    size_col: str | None = None,
    tokens_col: str | None = None,
    on: str | None = "index",
    stage_cols: str | list[str] | None = None,
    extra: list[str] = (),
    epochs_cols: str | None = None,
) -> ResultsTable:
    """Read (and join on `on`, or stack for `on=None`) results, resolve the column
    selections and validate them.

    `mixture_cols` is one selection (comma-separated names and/or PREFIX*) or a list of
    them, one per stage: each stage's weights must sum to one on their own. `stage_cols`
    selects free stage variables (e.g. the cooldown's share of the tokens), each its own
    one-column group after the mixtures. Only `usable_rows` are read; the table records
    how many were left out (`left_out_line`). `extra` columns (e.g. accuracies beside the
    fitted bpb) are read as they are, missing values as NaN; absent ones are left out.

    With a tokens column, each run's tokens and epochs per domain are read too (for the
    data-constrained law): the epochs from `epochs_cols` (default `epochs.*` where the table
    has them), the tokens from each stage's tokens and realised mixture (`tokens.STAGE`,
    `mix.STAGE.DOMAIN`) or, for one mixture of domain columns, from the mixture itself.
    """
    paths = [paths] if isinstance(paths, str | Path) else list(paths)
    df = join_tables(paths, on=on)
    source = " + ".join(map(str, paths))
    keep, left_out = usable_rows(df, source)
    rows = np.flatnonzero(keep)  # errors name a row by its place in the file
    df = df.filter(pl.Series(keep))
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
    w = mixture_array(df, mix, source, groups, rows)
    y = _numeric(df, mets, source, rows)
    # the column names themselves, not the selections: FIT.json says what a size counts
    size_col = resolve_columns(size_col, df.columns, source)[0] if size_col else None
    tokens_col = resolve_columns(tokens_col, df.columns, source)[0] if tokens_col else None
    size = _numeric(df, [size_col], source, rows)[:, 0] if size_col else None
    tokens = _numeric(df, [tokens_col], source, rows)[:, 0] if tokens_col else None
    more = {
        c: df[c].cast(pl.Float64, strict=False).fill_null(np.nan).to_numpy()
        for c in extra
        if c in df.columns
    }
    keys = trial_keys(df)
    run_data, fracs = None, None
    if tokens is not None:
        run_data, fracs = _domain_data(df, mix, groups, tokens, epochs_cols, source, rows)
    elif epochs_cols:
        raise CodemixError("--epochs-cols needs --tokens-col (each run's tokens)")
    vocab = _one_value(df, VOCAB_SIZE)
    domains = _one_value(df, CODE_DOMAINS)
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
        left_out=left_out,
        vocab_size=int(vocab) if isinstance(vocab, int | float) and vocab > 0 else None,
        code_domains=split_domains(domains),
        extra=more,
        keys=keys,
        run_data=run_data,
        stage_fracs=fracs,
    )


def _domain_data(df, mix, groups, tokens, epochs_cols, source, rows):
    """(RunData, stage fractions) of every run, or (None, None) when the table has no epochs
    columns and none were asked for."""
    epochs_at = f"epochs{SEP}"
    if epochs_cols is None:
        if not any(c.startswith(epochs_at) for c in df.columns):
            return None, None
        epochs_cols = epochs_at + "*"
    ecols = resolve_columns(epochs_cols, df.columns, source)
    domains = tuple(c.rpartition(SEP)[2] for c in ecols)
    epochs = _numeric(df, ecols, source, rows)
    where = column_domains(mix, groups)
    n_groups = len(groups) if groups else 1
    fracs = np.ones((len(df), n_groups))
    dom_tokens = np.zeros((len(df), len(domains)))
    stage_of = group_stages(mix, groups)
    staged = all(stage_of.get(i) for i in range(n_groups) if i in stage_of)
    if staged and all(f"tokens{SEP}{st}" in df.columns for st in stage_of.values()):
        # every stage's realised mixture, fitted or not (a fixed cooldown still trains on its
        # tokens): exact per-domain tokens
        all_stages = [
            c.split(SEP)[1]
            for c in df.columns
            if c.startswith(f"tokens{SEP}")
            and c.count(SEP) == 1
            and any(m.startswith(f"mix{SEP}{c.split(SEP)[1]}{SEP}") for m in df.columns)
        ]
        per_stage = {}
        for st in dict.fromkeys([*stage_of.values(), *all_stages]):
            st_tokens = _numeric(df, [f"tokens{SEP}{st}"], source, rows)[:, 0]
            per_stage[st] = np.zeros((len(df), len(domains)))
            for k, d in enumerate(domains):
                col = f"mix{SEP}{st}{SEP}{d}"
                if col in df.columns:
                    per_stage[st][:, k] = st_tokens * _numeric(df, [col], source, rows)[:, 0]
            dom_tokens += per_stage[st]
        for i, st in stage_of.items():
            fracs[:, i] = _numeric(df, [f"tokens{SEP}{st}"], source, rows)[:, 0] / tokens
        staging = _staging(per_stage, stage_of, all_stages, n_groups)
    elif n_groups == 1:
        staging = (None, None)
        for j, cd in enumerate(where):
            if cd is None or cd[1] not in domains:
                raise CodemixError(
                    f"{source}: mixture column {mix[j]!r} names no domain of the epochs "
                    f"columns ({', '.join(ecols)})"
                )
            dom_tokens[:, domains.index(cd[1])] += (
                tokens * _numeric(df, [mix[j]], source, rows)[:, 0]
            )
    else:
        raise CodemixError(
            f"{source}: cannot tell each domain's tokens per run: give mixture columns "
            "mix.STAGE.DOMAIN with tokens.STAGE columns (a study export has both)"
        )
    unknown = sorted({cd[1] for cd in where if cd is not None} - set(domains))
    if unknown:
        raise CodemixError(f"{source}: no epochs column for domain {unknown[0]!r}")
    return RunData(domains, dom_tokens, epochs, *staging), fracs


def _staging(per_stage: dict, stage_of: dict, all_stages: list, n_groups: int):
    """(stage tokens per mixture group, tokens after each) where every stage that trained is
    a fitted group (the data law's recency term needs them all), else (None, None). The
    export's tokens.STAGE columns come in training order."""
    if n_groups < 2 or len(stage_of) != n_groups or set(all_stages) - set(stage_of.values()):
        return None, None
    after_in_order = tokens_after(np.stack([per_stage[st].sum(1) for st in all_stages], 1))
    stage_tokens = np.stack([per_stage[stage_of[i]] for i in range(n_groups)], 1)
    at = [all_stages.index(stage_of[i]) for i in range(n_groups)]
    return stage_tokens, after_in_order[:, at]
