"""`codemix study export`: one row per trial and size, the input of the analysis."""

from __future__ import annotations

import json
from pathlib import Path

from codemix.core import results
from codemix.core.errors import CodemixError
from codemix.core.files import atomic_path
from codemix.optimizer.trials import (
    INTERRUPTED_ATTR,
    OVERRIDES_ATTR,
    REASON_ATTR,
    RESULT_ATTR,
    RETRY_OF_ATTR,
    SURPLUS_ATTR,
)


def rows(study) -> list[dict]:
    """One row per trial and size it has results for; columns as `codemix.core.results`
    names them."""
    out = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get(SURPLUS_ATTR):
            continue
        interrupted = t.user_attrs.get(INTERRUPTED_ATTR)
        base = {
            "study": study.study_name,
            "trial": t.number,
            "state": t.state.name.lower(),
            "reason": t.user_attrs.get(REASON_ATTR)
            or (f"interrupted by {interrupted}; retried" if interrupted else None),
            "retry_of": t.user_attrs.get(RETRY_OF_ATTR),
        }
        base |= _params(t)
        if t.values is not None:
            base |= {results.objective(i): v for i, v in enumerate(t.values)}
        runs, scratch = {}, {}
        for key, summary in sorted(t.user_attrs.items()):
            if not key.startswith(RESULT_ATTR) or "params" not in summary:
                continue  # a run that never started (its trunk failed) has no columns
            size, _, kind = key[len(RESULT_ATTR) :].partition("/")
            if kind == "scratch":
                scratch[size] = summary
            else:
                runs[(size, kind)] = base | results.run_columns(summary, size)
        for (size, _), row in runs.items():
            if size in scratch:  # the diagonal: the same run from scratch, beside it
                row |= results.scratch_columns(scratch[size])
            out.append(row)
    control = study.user_attrs.get("codemix/control")
    return _versus(out, control) if control else out


def _versus(out: list[dict], control: dict) -> list[dict]:
    """Each run's metrics minus the control run's of the same size and seed (a
    microanneal's value of its candidate: with paired seeds both branch from one trunk)."""
    col = results.choice(control["param"])
    base = {
        (r["size"], r.get("seed")): r
        for r in out
        if r.get(col) == control["choice"] and r.get("run_status") == "completed"
    }
    for r in out:
        c = base.get((r["size"], r.get("seed")))
        for k, v in list(r.items()):
            if c is None or k.endswith(".items"):
                continue
            if k.split(results.SEP)[0] in ("loss", "bpb", "task"):
                if isinstance(v, int | float) and isinstance(c.get(k), int | float):
                    r[results.versus(k)] = v - c[k]
    return out


def _params(t) -> dict:
    """The searched values as trained (a simplex as the shares, not Optuna's raw draws),
    and the names of searched choices."""
    cols = {}
    for item in t.user_attrs.get(OVERRIDES_ATTR) or [f"{k}={v}" for k, v in t.params.items()]:
        key, _, text = item.partition("=")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        cols[results.param(key)] = value
        raw = t.params.get(key)
        if isinstance(raw, str) and raw != value:  # a named choice
            cols[results.choice(key)] = raw
    for key, raw in t.params.items():  # a named schedule sets other keys, not its own
        if results.param(key) not in cols and isinstance(raw, str):
            cols[results.choice(key)] = raw
    return cols


def export(study, path: Path) -> int:
    import polars as pl

    if path.suffix not in (".csv", ".parquet"):
        raise CodemixError(f"-o {path}: write .csv or .parquet")
    if not path.parent.is_dir():
        raise CodemixError(f"-o {path}: folder {path.parent} does not exist")
    data = rows(study)
    if not data:
        raise CodemixError(f"study {study.study_name!r} has no trial results yet")
    df = pl.DataFrame(data, infer_schema_length=None)
    with atomic_path(path) as tmp:
        df.write_csv(tmp) if path.suffix == ".csv" else df.write_parquet(tmp)
    return df.height
