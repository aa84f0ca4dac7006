"""Fitting a whole results table into a FIT.json, and predicting from one.

`fit_results` fits a response surface per metric (on the runs of the largest size, when
sizes are given) and, with runs at 3+ sizes, the joint mixture-and-size law per metric, the
decision accuracy between sizes, and any accuracy links (`analysis.link`). `predict` gives
each metric's mean and interval at mixtures: from the surface at the training size, or from
the size law at a target size (one for all rows, or one per row); a linked accuracy from its
bpb's prediction, carried through the link.
"""

from __future__ import annotations

import numpy as np

from codemix.analysis.codeshare import check_code_domains
from codemix.analysis.contest import choose_size_law
from codemix.analysis.datalaw import TargetData
from codemix.analysis.decision import decision_accuracy
from codemix.analysis.fitfile import FitFile
from codemix.analysis.link import fit_link, link_bpb_metric
from codemix.analysis.scaling import ScalingConfig
from codemix.analysis.surfaces import SurfaceConfig, fit_surface, quiet_numerics
from codemix.analysis.tables import ResultsTable
from codemix.core.errors import CodemixError

__all__ = ["fit_results", "predict"]


@quiet_numerics()
def fit_results(
    table: ResultsTable,
    surface_config: SurfaceConfig | None = None,
    scaling_config: ScalingConfig | None = None,
    progress: bool = False,
    code_domains: tuple[str, ...] | None = None,
    links: list[tuple[str, float | None]] = (),
    law: str = "auto",
    r_star: str = "auto",
    overfit_past: str = "tangent",
) -> FitFile:
    """Surfaces for every metric (on the runs of the largest size, if sizes are given) and,
    with runs at 3+ sizes, the joint mixture-and-size law per metric (Scheffe-linear or
    -quadratic exponents, whichever predicts held-out runs better).

    `code_domains` (which domains are code) wins over the table's; each must be the domain
    of a mixture column. The fit records them with the size column and the vocabulary.

    `links`: (accuracy column, chance level or None) pairs; each accuracy is linked to its
    task's bpb (a fitted metric) on every run above chance. Without a chance level the
    table's `task.F.chance` column gives it (in `table.extra`).

    `law`: the size law: `auto` (the data-constrained law where the table has each run's
    tokens and epochs per domain and it predicts held-out runs better), `joint` or
    `joint_data`. `r_star`: the data law's R* shared, per domain, or chosen on held-out runs
    (auto). `overfit_past`: how +overfit's power goes on past the ladder's most epochs:
    along its tangent there, or as the power."""
    if code_domains:
        code_domains = check_code_domains(code_domains, table.mixture_cols)
    surfaces, scaling = {}, {}
    rows = np.ones(table.n_runs, bool)
    if table.size is not None:
        rows = table.size == table.size.max()
    for metric in table.metric_cols:
        y = table.metric(metric)
        surfaces[metric] = fit_surface(
            table.weights[rows],
            y[rows],
            metric,
            table.mixture_cols,
            surface_config,
            progress,
            groups=table.groups,
        )
        if table.size is not None and len(np.unique(table.size)) >= 3:
            if np.any(y <= 0):
                raise CodemixError(f"{metric}: a size law needs positive values (a loss)")
            fracs = () if table.stage_fracs is None else tuple(np.median(table.stage_fracs, 0))
            scaling[metric] = choose_size_law(
                table.weights,
                table.size,
                y,
                table.run_data,
                table.mixture_cols,
                fracs,
                scaling_config,
                progress,
                groups=table.groups,
                law=law,
                r_star=r_star,
                overfit_past=overfit_past,
            )
    decision = {}
    if table.size is not None:
        for metric in table.metric_cols:
            records = decision_accuracy(table.weights, table.size, table.metric(metric), table.keys)
            if records:
                decision[metric] = records
    fitted_links = {}
    for acc_col, chance in links:
        bpb_col = link_bpb_metric(acc_col)
        if bpb_col not in table.metric_cols:
            raise CodemixError(f"--link {acc_col} needs its bpb fitted too: add --metric {bpb_col}")
        if acc_col not in table.extra:
            raise CodemixError(f"--link {acc_col}: {table.source} has no column {acc_col!r}")
        if chance is None:
            chance = _chance(table, acc_col)
        seed = scaling_config.seed if scaling_config else 0
        fitted_links[acc_col] = fit_link(
            acc_col, bpb_col, table.metric(bpb_col), table.extra[acc_col], chance, seed=seed
        )
    return FitFile(
        mixture_cols=table.mixture_cols,
        surfaces=surfaces,
        scaling=scaling,
        data=table.summary(),
        size_col=table.size_col,
        tokens_col=table.tokens_col,
        groups=table.groups,
        vocab_size=table.vocab_size,
        code_domains=code_domains or table.code_domains,
        links=fitted_links,
        decision=decision,
    )


def _chance(table: ResultsTable, acc_col: str) -> float:
    col = acc_col.rpartition(".")[0] + ".chance"
    values = table.extra.get(col)
    if values is None or not np.isfinite(values).any():
        raise CodemixError(
            f"--link {acc_col}: the table has no {col} column to give the chance level; "
            f"give it after @ (e.g. --link {acc_col}@0.25)"
        )
    values = values[np.isfinite(values)]
    if np.ptp(values) > 1e-9:
        raise CodemixError(f"{col} differs between runs: were they scored on other items?")
    return float(values[0])


@quiet_numerics()
def predict(
    fit: FitFile,
    w: np.ndarray,
    size: float | np.ndarray | None = None,
    level: float = 0.9,
    data: TargetData | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """metric -> (mean, lo, hi) at mixtures `w`: the size law at `size` (one for all rows, or
    one per row, e.g. confirmatory runs at several sizes), else the surface. `data`: the
    target's tokens and unique tokens per domain, or each row's tokens and epochs, for the
    laws with a data term (default: the proxies' tokens per parameter and corpus)."""
    if size is not None and np.ndim(size) == 1:
        n = np.asarray(size, float)
        out = {m: tuple(np.empty(len(n)) for _ in range(3)) for m in fit.metrics}
        for v in np.unique(n):
            at = n == v
            for m, bounds in predict(fit, w[at], float(v), level, _rows(data, at)).items():
                for dst, src in zip(out[m], bounds, strict=True):
                    dst[at] = src
        return out
    out = {}
    missing = {link.bpb_metric for link in fit.links.values()} - set(fit.surfaces)
    if missing:
        raise CodemixError(f"the fit links accuracy to {', '.join(missing)} but has no fit of it")
    for metric, surf in fit.surfaces.items():
        if size is None:
            out[metric] = surf.interval(w, level)
        elif metric in fit.scaling:
            out[metric] = fit.scaling[metric].interval(w, size, level, data=data)
        else:
            raise CodemixError(
                f"the fit has no size law for {metric}: fit with --size-col on runs at 3 or "
                "more sizes to predict at a target size"
            )
    for metric, link in fit.links.items():
        out[metric] = link.interval(*out[link.bpb_metric], level)
    return out


def _rows(data: TargetData | None, at: np.ndarray) -> TargetData | None:
    """The part of per-row target data for the rows `at`."""
    if data is None:
        return None
    tokens = data.tokens if np.ndim(data.tokens) == 0 else np.asarray(data.tokens)[at]
    epochs = None if data.epochs is None else np.asarray(data.epochs)[at]
    stages = None if data.stages is None else np.asarray(data.stages)[at]
    return TargetData(tokens, data.unique, epochs, stages)
