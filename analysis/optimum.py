"""The optimum under a stated objective with its uncertainty, and the two-metric Pareto
front (fitting and prediction are in `analysis.fit`).

Objectives (`parse_objective`):
- `min:METRIC` / `max:METRIC`;
- `min:METRIC,OTHER<=VALUE` (or `>=`): best METRIC subject to a bound on another metric;
- `weighted:M1=0.7,M2=0.3`: minimise the weighted sum (give a negative weight to a metric
  to maximise).
The optimum is searched over Dirichlet-sampled mixtures plus the simplex's vertices (with
one mixture per stage: each stage's simplex, combined; see `analysis.layout`); its
uncertainty is the distribution of the argmax over bootstrap draws of the size law (at a
target size) or posterior draws of the surfaces (at the training size).

Outside the weight ranges the fitted runs covered, the surfaces and size laws extrapolate:
the optimum is searched within them (`weight_ranges`), and `outside_ranges` finds the rows
of a table to predict that lie beyond them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from codemix.analysis.datalaw import tie_point, tied_predictions
from codemix.analysis.fit import predict
from codemix.analysis.fitfile import FitFile
from codemix.analysis.intervals import central
from codemix.analysis.layout import candidates, is_free
from codemix.analysis.surfaces import quiet_numerics
from codemix.core.errors import CodemixError

__all__ = [
    "Objective",
    "edge_stages",
    "Optimum",
    "OutsideRanges",
    "find_optimum",
    "outside_ranges",
    "pareto_front",
    "pareto_indices",
    "parse_objective",
    "weight_ranges",
]

RANGE_TOL = 1e-6  # FIT.json keeps the ranges to 6 decimals


@dataclass(frozen=True)
class Objective:
    """What to optimise: `sense` * sum(weights[m] * metric m), subject to `constraints`."""

    weights: dict[str, float]
    constraints: tuple[tuple[str, str, float], ...] = ()
    text: str = ""

    @property
    def metrics(self) -> set[str]:
        return set(self.weights) | {c[0] for c in self.constraints}

    def score(self, preds: dict[str, np.ndarray]) -> np.ndarray:
        """Lower is better; infeasible candidates score +inf."""
        s = sum(wt * preds[m] for m, wt in self.weights.items())
        for m, op, v in self.constraints:
            bad = preds[m] > v if op == "<=" else preds[m] < v
            s = np.where(bad, np.inf, s)
        return s


def parse_objective(text: str, metrics: list[str]) -> Objective:
    """Read `min:M`, `max:M`, `min:M,OTHER<=V` or `weighted:M1=0.7,M2=0.3`."""
    kind, _, rest = text.partition(":")
    parts = [p.strip() for p in rest.split(",") if p.strip()]
    if kind not in ("min", "max", "weighted") or not parts:
        raise CodemixError(
            f"unknown objective {text!r}: use min:METRIC, max:METRIC, "
            "min:METRIC,OTHER<=VALUE or weighted:M1=W1,M2=W2"
        )

    def known(m: str) -> str:
        if m not in metrics:
            raise CodemixError(f"objective names metric {m!r}; the fit has {', '.join(metrics)}")
        return m

    if kind == "weighted":
        weights = {}
        for p in parts:
            m, eq, v = p.rpartition("=")
            try:
                weights[known(m.strip())] = float(v)
            except ValueError:
                raise CodemixError(f"bad weight {p!r} in objective {text!r}") from None
            if not eq:
                raise CodemixError(f"bad weight {p!r} in objective {text!r}")
        return Objective(weights, (), text)
    sign = 1.0 if kind == "min" else -1.0
    cons = []
    for p in parts[1:]:
        m = re.fullmatch(r"(.+?)\s*(<=|>=)\s*([-+0-9.eE]+)", p)
        if not m:
            raise CodemixError(f"bad constraint {p!r} in objective {text!r}: use METRIC<=VALUE")
        cons.append((known(m.group(1)), m.group(2), float(m.group(3))))
    return Objective({known(parts[0]): sign}, tuple(cons), text)


def weight_ranges(fit: FitFile) -> tuple[np.ndarray, np.ndarray] | None:
    """The lowest and highest value of each mixture column (free stage variables too) over
    the fitted runs, as FIT.json records them; None for a file that does not."""
    lo, hi = fit.data.get("weights_min"), fit.data.get("weights_max")
    if lo is None or hi is None or not len(lo) == len(hi) == len(fit.mixture_cols):
        return None
    return np.asarray(lo, float), np.asarray(hi, float)


def edge_stages(fit: FitFile, mixture: np.ndarray) -> list[str]:
    """The stages whose code share in `mixture` sits at an end of the range the fitted runs
    explored, where that end is a choice of the study (not 0 % or 100 %, which no search can
    pass): an optimum there may lie beyond it."""
    from codemix.analysis.codeshare import stage_shares

    ranges = weight_ranges(fit)
    if ranges is None:
        return []
    lo_w, hi_w = ranges
    out = []
    for st in stage_shares(fit):
        cols = np.asarray(st.cols)[np.asarray(st.code)]
        x, lo, hi = (float(v[cols].sum()) for v in (mixture, lo_w, hi_w))
        near = 0.02 * max(hi - lo, 1e-9) + 1e-3
        if (abs(x - lo) < near and lo > 0.01) or (abs(x - hi) < near and hi < 0.99):
            out.append(st.name.rpartition(".")[2])
    return out


@dataclass(frozen=True)
class OutsideRanges:
    """Rows beyond the fitted runs' weight ranges, and for each column they pass its most
    extreme value: (column, value, '>' or '<', the range's end)."""

    rows: np.ndarray  # positions in the table, ascending
    columns: tuple[tuple[str, float, str, float], ...]


def outside_ranges(fit: FitFile, w: np.ndarray, tol: float = RANGE_TOL) -> OutsideRanges | None:
    """Which rows of mixtures `w` lie outside the weight ranges of the fitted runs (in any
    column): their predictions extrapolate. None when the fit records no ranges."""
    ranges = weight_ranges(fit)
    if ranges is None:
        return None
    lo, hi = ranges
    w = np.atleast_2d(np.asarray(w, float))
    above, below = w > hi + tol, w < lo - tol
    columns = []
    for j, col in enumerate(fit.mixture_cols):
        if above[:, j].any():
            columns.append((col, float(w[:, j].max()), ">", float(hi[j])))
        if below[:, j].any():
            columns.append((col, float(w[:, j].min()), "<", float(lo[j])))
    rows = np.flatnonzero((above | below).any(axis=1))
    return OutsideRanges(rows, tuple(columns))


def _search_space(fit: FitFile, n: int, seed: int, within_data: bool) -> np.ndarray:
    ranges = weight_ranges(fit)
    if ranges is None:
        return candidates(fit.group_sizes, n, seed)
    lo, hi = ranges
    if not within_data:  # free stage variables keep their range: there is no simplex to fill
        free = is_free(fit.group_sizes, len(lo))
        lo = np.where(free, lo, -np.inf)
        hi = np.where(free, hi, np.inf)
    try:
        return candidates(fit.group_sizes, n, seed, lo, hi)
    except CodemixError as e:
        raise CodemixError(f"{e}; search the whole simplex instead (--full-simplex)") from None


def _draws(
    fit: FitFile, w: np.ndarray, size: float | None, metrics, n_draws: int, seed: int, data=None
):
    """metric -> (candidates x draws) plausible values of the mean at `w`."""
    rng = np.random.default_rng(seed)
    out = {}
    linked = [m for m in metrics if m in fit.links]
    for m in linked:  # a linked accuracy: its bpb's draws through the link's draws
        bpb = fit.links[m].bpb_metric
        out[m] = fit.links[m].mean_draws(_draws(fit, w, size, [bpb], n_draws, seed, data)[bpb])
    for m in metrics:
        if m in out:
            continue
        if size is not None:
            law = fit.scaling[m]
            d = law.boot_predictions(w, size, data=data)[:, :n_draws]
            if law.tie_point == "median" and law.tied:
                own = law.predict(w, size, data)  # the draws' spread, about the tie's point
                point = tie_point(law, own, tied_predictions(law, w, size, data))
                d = d * (point / own)[:, None]
            out[m] = d
        else:
            out[m] = _surface_draws(fit.surfaces[m].model, w, n_draws, rng)
    return out


def _surface_draws(model, w: np.ndarray, n_draws: int, rng) -> np.ndarray:
    name = model.name
    if name == "stack":
        return sum(
            a * _surface_draws(m, w, n_draws, rng)
            for a, m in zip(model.weights, model.members, strict=True)
        )
    if name in ("linear", "quadratic"):
        theta = rng.multivariate_normal(model.params, model.cov, n_draws, method="eigh")
        return model.design(w) @ theta.T
    if name in ("exp", "exp_log"):
        theta = rng.multivariate_normal(model.params, model.cov, n_draws, method="eigh")
        f = model.features(w)
        return theta[:, 0][None, :] + model.sign * np.exp(np.clip(f @ theta[:, 1:].T, -50, 50))
    # Gaussian processes: joint posterior of the latent mean over the candidates
    mean, cov = model.latent(w)
    evals, evecs = np.linalg.eigh((cov + cov.T) / 2)
    root = evecs * np.sqrt(np.clip(evals, 0, None))
    return mean[:, None] + root @ rng.standard_normal((len(w), n_draws))


@dataclass
class Optimum:
    """The best mixture, its predicted metrics with intervals, and the argmax distribution."""

    objective: str
    size: float | None
    mixture: np.ndarray
    predicted: dict[str, tuple[float, float, float]]
    argmax_mean: np.ndarray
    argmax_lo: np.ndarray
    argmax_hi: np.ndarray
    n_draws: int


@quiet_numerics()
def find_optimum(
    fit: FitFile,
    objective: Objective,
    size: float | None = None,
    n_candidates: int = 4000,
    n_draws: int = 200,
    level: float = 0.9,
    seed: int = 0,
    within_data: bool = True,
    data=None,
) -> Optimum:
    """Best candidate mixture under `objective`, with the bootstrap/posterior argmax spread.

    With `within_data`, only mixtures whose every weight lies in the range the training runs
    covered are searched: outside it the surfaces extrapolate. `data` (a
    `datalaw.TargetData`): the target's tokens and unique tokens, for data-constrained laws."""
    w = _search_space(fit, n_candidates, seed, within_data)
    preds = {m: v[0] for m, v in predict(fit, w, size, level, data).items()}
    s = objective.score(preds)
    if not np.isfinite(s).any():
        raise CodemixError(f"no mixture satisfies the constraints of {objective.text!r}")
    best = int(np.argmin(s))
    n_gp = max(len(w) // 4, 1)  # GP posterior draws are cubic in candidates: thin them
    sub = np.r_[best, np.random.default_rng(seed + 1).choice(len(w), n_gp, replace=False)]
    draws = _draws(fit, w[sub] if size is None else w, size, objective.metrics, n_draws, seed, data)
    pool = w[sub] if size is None else w
    n_eff = min(d.shape[1] for d in draws.values())
    picks = []
    for j in range(n_eff):
        sj = objective.score({m: d[:, j] for m, d in draws.items()})
        if np.isfinite(sj).any():
            picks.append(pool[int(np.argmin(sj))])
    picks = np.array(picks) if picks else w[[best]]
    lo, hi = central(picks, level, axis=0)
    at = predict(fit, w[[best]], size, level, data)
    return Optimum(
        objective=objective.text,
        size=size,
        mixture=w[best],
        predicted={m: (float(a[0]), float(b[0]), float(c[0])) for m, (a, b, c) in at.items()},
        argmax_mean=picks.mean(0),
        argmax_lo=lo,
        argmax_hi=hi,
        n_draws=len(picks),
    )


@quiet_numerics()
def pareto_front(
    fit: FitFile,
    metric_a: str,
    metric_b: str,
    size: float | None = None,
    n_candidates: int = 4000,
    seed: int = 0,
    within_data: bool = True,
    data=None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mixtures not dominated in (metric_a, metric_b), both minimised; sorted by metric_a."""
    w = _search_space(fit, n_candidates, seed, within_data)
    p = predict(fit, w, size, data=data)
    a, b = p[metric_a][0], p[metric_b][0]
    keep = pareto_indices(a, b)
    return w[keep], a[keep], b[keep]


def pareto_indices(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Indices of the points that no other point beats on both a and b (lower is better),
    sorted by a; of points tied on a, only the lowest b can be on the front."""
    order = np.lexsort((b, a))
    keep, best_b = [], np.inf
    for i in order:
        if b[i] < best_b:
            keep.append(i)
            best_b = b[i]
    return np.array(keep, dtype=int)
