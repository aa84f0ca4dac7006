"""FIT.json: a versioned, self-describing record of fitted surfaces and scaling laws.

Top-level keys: `format` ("codemix.fit"), `version`, `created`, `data` (training-data
summary), `mixture_cols`, `mixture_groups` (the columns of each stage's mixture; one
group for a static mixture), `size_col` (the column the sizes came from: what a size counts,
e.g. "params" or "non_embedding_params"), `tokens_col`, `vocab_size` (of the runs, where the
table said), `code_domains` (the domains counted as code, where known), `surfaces` (metric
-> surface: family, CV table, parameters or, for Gaussian processes, the training points),
`scaling` (metric -> law across sizes, when the table had a size column), `links` (accuracy
metric -> its sigmoid link from a task's bpb, `analysis.link`) and `decision` (metric -> the
decision accuracy between each pair of sizes, `analysis.decision`). Everything
needed to predict is inside; the original table is not read again. Files written before
`vocab_size` and `code_domains` were recorded load with both unknown (None).
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from codemix.analysis.layout import as_groups, split_names
from codemix.analysis.link import AccuracyLink
from codemix.analysis.surfaces import Surface
from codemix.core.errors import CodemixError
from codemix.core.files import atomic_write_text

__all__ = [
    "FORMAT",
    "VERSION",
    "FitFile",
    "atomic_write_text",
    "combine_fits",
    "load_fit",
    "save_fit",
]

FORMAT = "codemix.fit"
VERSION = 1


@dataclass
class FitFile:
    """Surfaces (and optional size laws) for the metrics of one results table."""

    mixture_cols: tuple[str, ...]
    surfaces: dict[str, Surface]
    scaling: dict[str, object] = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    size_col: str | None = None
    tokens_col: str | None = None
    created: str = ""
    groups: tuple[int, ...] | None = None  # one mixture per stage (analysis.layout); None: one
    vocab_size: int | None = None  # of the fitted runs, where the table said
    code_domains: tuple[str, ...] | None = None  # domains counted as code, where known
    links: dict[str, AccuracyLink] = field(default_factory=dict)  # accuracy from a task's bpb
    decision: dict[str, list[dict]] = field(default_factory=dict)  # per metric, size pairs

    @property
    def metrics(self) -> list[str]:
        """Every metric the fit predicts: the fitted ones, then those linked to them."""
        return list(self.surfaces) + list(self.links)

    @property
    def group_sizes(self) -> tuple[int, ...]:
        return self.groups or (len(self.mixture_cols),)

    @property
    def mixture_groups(self) -> list[list[str]]:
        return split_names(self.mixture_cols, self.groups)

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "created": self.created or _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "data": self.data,
            "mixture_cols": list(self.mixture_cols),
            "mixture_groups": self.mixture_groups,
            "size_col": self.size_col,
            "tokens_col": self.tokens_col,
            "vocab_size": self.vocab_size,
            "code_domains": list(self.code_domains) if self.code_domains else None,
            "surfaces": {m: s.to_dict() for m, s in self.surfaces.items()},
            "scaling": {m: s.to_dict() for m, s in self.scaling.items()},
            "links": {m: link.to_dict() for m, link in self.links.items()},
            "decision": self.decision,
        }

    @classmethod
    def from_dict(cls, d: dict, source: str = "FIT.json") -> FitFile:
        if d.get("format") != FORMAT:
            raise CodemixError(f"{source} is not a codemix fit file (format {d.get('format')!r})")
        if int(d.get("version", 0)) > VERSION:
            raise CodemixError(
                f"{source} has version {d['version']}; this codemix reads up to {VERSION}"
            )
        from codemix.analysis.datalaw import law_from_dict as law

        return cls(
            mixture_cols=tuple(d["mixture_cols"]),
            surfaces={m: Surface.from_dict(s) for m, s in d["surfaces"].items()},
            scaling={m: law(s) for m, s in d.get("scaling", {}).items()},
            data=d.get("data", {}),
            size_col=d.get("size_col"),
            tokens_col=d.get("tokens_col"),
            created=d.get("created", ""),
            groups=as_groups([len(g) for g in d.get("mixture_groups") or []]),
            vocab_size=None if d.get("vocab_size") is None else int(d["vocab_size"]),
            code_domains=tuple(d["code_domains"]) if d.get("code_domains") else None,
            links={m: AccuracyLink.from_dict(x) for m, x in (d.get("links") or {}).items()},
            decision=d.get("decision") or {},
        )


def combine_fits(fits: dict[str, FitFile]) -> FitFile:
    """One fit from several of the same mixture columns, each metric taken from the one fit
    that has it: a ladder per metric (text fitted with a repetition arm, code without, say).
    `fits`: source name -> fit. The mixture range searched by `optimum` is the one every
    fit's runs covered."""
    if len(fits) < 2:
        raise CodemixError("combine needs two or more fit files")
    (first, base), *rest = fits.items()
    fields = ("mixture_cols", "groups", "size_col", "tokens_col", "code_domains")
    for name, f in rest:
        for what in fields:
            if getattr(f, what) != getattr(base, what):
                raise CodemixError(
                    f"{name} and {first} differ in {what} ({getattr(f, what)!r} against "
                    f"{getattr(base, what)!r}): only fits of the same mixtures combine"
                )
    vocab = {f.vocab_size for f in fits.values()} - {None}
    if len(vocab) > 1:
        raise CodemixError(f"the fits were trained at different vocabularies: {sorted(vocab)}")
    owner: dict[str, str] = {}
    for name, f in fits.items():
        for m in f.metrics:
            if m in owner:
                raise CodemixError(
                    f"metric {m!r} is in both {owner[m]} and {name}: combine takes each metric "
                    "from one fit (refit one of them with only the other metrics)"
                )
            owner[m] = name
    lo = np.max(
        [f.data.get("weights_min", [0.0] * len(base.mixture_cols)) for f in fits.values()], 0
    )
    hi = np.min(
        [f.data.get("weights_max", [1.0] * len(base.mixture_cols)) for f in fits.values()], 0
    )
    if np.any(lo > hi):
        raise CodemixError("the fits' runs cover no common range of mixtures")
    data = {
        "combined": {name: {**f.data, "metrics": f.metrics} for name, f in fits.items()},
        "n_runs": sum(int(f.data.get("n_runs", 0)) for f in fits.values()),
        "weights_min": lo.round(6).tolist(),
        "weights_max": hi.round(6).tolist(),
    }
    merged = FitFile(
        base.mixture_cols,
        {},
        data=data,
        size_col=base.size_col,
        tokens_col=base.tokens_col,
        groups=base.groups,
        vocab_size=next(iter(vocab), None),
        code_domains=base.code_domains,
    )
    for f in fits.values():
        merged.surfaces |= f.surfaces
        merged.scaling |= f.scaling
        merged.links |= f.links
        merged.decision |= f.decision
    return merged


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"cannot write {type(o).__name__} to JSON")


def save_fit(fit: FitFile, path: str | Path) -> None:
    atomic_write_text(path, json.dumps(fit.to_dict(), default=_jsonable, indent=1) + "\n")


def load_fit(path: str | Path) -> FitFile:
    path = Path(path)
    if not path.is_file():
        raise CodemixError(f"fit file {path} does not exist")
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CodemixError(f"{path} is not valid JSON: {e}") from e
    try:
        return FitFile.from_dict(d, str(path))
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, CodemixError):
            raise
        raise CodemixError(f"{path} is not a complete codemix fit file: {e!r}") from e
