"""`codemix study export`: one row per trial and size, the input of the analysis."""

from __future__ import annotations

from pathlib import Path

from codemix.errors import CodemixError
from codemix.files import atomic_path
from optimizer.study import (
    INTERRUPTED_ATTR,
    REASON_ATTR,
    RESULT_ATTR,
    RETRY_OF_ATTR,
    SURPLUS_ATTR,
)


def rows(study) -> list[dict]:
    out = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get(SURPLUS_ATTR):
            continue
        base = {
            "study": study.study_name,
            "trial": t.number,
            "state": t.state.name.lower(),
            "reason": t.user_attrs.get(REASON_ATTR)
            or (
                f"interrupted by {t.user_attrs[INTERRUPTED_ATTR]}; retried"
                if INTERRUPTED_ATTR in t.user_attrs
                else None
            ),
            "retry_of": t.user_attrs.get(RETRY_OF_ATTR),
        }
        base |= {f"param_{k}": v for k, v in t.params.items()}
        if t.values is not None:
            base |= {f"objective_{i}": v for i, v in enumerate(t.values)}
        sizes = [k[len(RESULT_ATTR) :] for k in t.user_attrs if k.startswith(RESULT_ATTR)]
        for size in sizes:
            r = t.user_attrs[RESULT_ATTR + size]
            row = dict(
                base,
                size=size,
                params=r["params"],
                non_embedding_params=r["non_embedding_params"],
                tokens=r["tokens"],
                flops=r["flops"],
                wall_time_s=r["wall_time_s"],
                tokens_per_s=r.get("tokens_per_s"),
                run_status=r["status"],
            )
            final = r["final"] or {}
            for kind in ("loss", "bpb"):
                for d, v in (final.get(kind) or {}).items():
                    row[f"{kind}_{d}"] = v
            for stage, mix in r["realised_mixture"].items():
                for d, w in mix.items():
                    row[f"mix_{stage}_{d}"] = w
            for stage, n in r["stage_tokens"].items():
                row[f"tokens_{stage}"] = n
            for d, e in r["epochs"].items():
                row[f"epochs_{d}"] = e
            out.append(row)
    return out


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
