"""Response surfaces from mixture weights to a metric, chosen by k-fold cross-validation.

Families (see `analysis._families`): Scheffe polynomials (`linear`, `quadratic`, through
statsmodels, with its confidence and prediction intervals), the Data Mixing Laws exponential
(`exp`, and `exp_log` with power-law terms), and flexible models (`gp`, and `gp_exp`, a GP
around the `exp_log` law). `fit_surface` scores every candidate by the out-of-fold RMSE of a
k-fold split of the training runs, keeps the lowest, and refits it on all runs; the CV table
of every candidate goes into the result. `stack`, a convex combination of the families whose
weights are fitted on out-of-fold predictions (cross-fitted, so its own CV score is honest),
competes too. Prediction intervals are calibrated on the same folds: the chosen family's
half-widths are scaled so that the requested share of out-of-fold runs falls inside
(split-conformal), since a family's own intervals assume it is the true model.

A family whose CV error is absurd (see `implausible`) counts as failed, like one that could
not be fitted: it is never chosen nor stacked. The numeric warnings of fitting (overflow in
an exponential, optimisers that stop early) are silenced by `quiet_numerics`: the CV table
is where a family's trouble shows.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from codemix.analysis._families import FAMILIES, Stack, family_from_dict, make_family, stack_weights
from codemix.analysis.intervals import central, coverage, interval_scale, widen
from codemix.analysis.layout import as_groups, check_groups
from codemix.core.errors import CodemixError
from codemix.core.progress import track

__all__ = [
    "FAMILIES",
    "CVScore",
    "Surface",
    "SurfaceConfig",
    "cross_validate",
    "fit_surface",
    "implausible",
    "quiet_numerics",
]

# A model predicting the training folds' mean scores a CV RMSE about the metric's sd; one
# 10x worse has left the data (an exponential blown up at a held-out run), not just fit it
# badly, and neither its refit nor a stack with it can be trusted.
IMPLAUSIBLE_RMSE_SD = 10.0


def implausible(rmse: float, y: np.ndarray) -> str:
    """Why a CV RMSE on runs with metric values `y` is not believable, or '' if it is: it is
    not finite, or it exceeds IMPLAUSIBLE_RMSE_SD times the sd of `y`."""
    sd = float(np.std(y))
    if not np.isfinite(rmse) or (sd > 0 and rmse > IMPLAUSIBLE_RMSE_SD * sd):
        return f"implausible CV RMSE {rmse:.2g} (metric sd {sd:.2g})"
    return ""


def _warning_types() -> tuple[type[Warning], ...]:
    from scipy.optimize import OptimizeWarning
    from sklearn.exceptions import ConvergenceWarning as SklearnConvergence
    from statsmodels.tools.sm_exceptions import ConvergenceWarning, ValueWarning

    return (RuntimeWarning, OptimizeWarning, ConvergenceWarning, ValueWarning, SklearnConvergence)


@contextlib.contextmanager
def quiet_numerics() -> Iterator[None]:
    """Silence numpy's floating-point warnings and the numeric warnings of scipy,
    statsmodels and scikit-learn (overflow, invalid values, no convergence) while fitting
    or predicting; other warnings and every exception pass as usual. Also a decorator."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        for kind in _warning_types():
            warnings.simplefilter("ignore", kind)
        # a GP's variance at a training point can round below zero; it is clipped to zero
        warnings.filterwarnings("ignore", "Predicted variances smaller than 0")
        yield


@dataclass(frozen=True)
class SurfaceConfig:
    """Which families compete, how they are scored, and the default interval level."""

    families: tuple[str, ...] = FAMILIES
    stack: bool = True  # also score a convex combination of the families (cross-fitted)
    folds: int = 5
    seed: int = 0
    level: float = 0.9
    calibrate: bool = True  # scale intervals so `level` of the out-of-fold runs fall inside

    def __post_init__(self) -> None:
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown or not self.families:
            raise CodemixError(
                f"unknown model family {', '.join(unknown) or '(none)'}; known: "
                f"{', '.join(FAMILIES)}"
            )
        if self.folds < 2:
            raise CodemixError(f"folds must be >= 2, got {self.folds}")
        if not 0 < self.level < 1:
            raise CodemixError(f"level must be in (0, 1), got {self.level}")


@dataclass(frozen=True)
class CVScore:
    """Out-of-fold scores of one family (NaN where it could not be fitted)."""

    family: str
    rmse: float
    mae: float
    spearman: float
    coverage: float  # share of held-out runs inside the fold model's interval at `level`
    error: str = ""
    # what the intervals' half-widths must be multiplied by for `level` of the held-out runs
    # to fall inside (split-conformal, on the out-of-fold runs)
    interval_scale: float = 1.0

    def to_dict(self) -> dict:
        keys = ("family", "rmse", "mae", "spearman", "coverage", "error", "interval_scale")
        return {k: getattr(self, k) for k in keys}


def _folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    idx = np.random.default_rng(seed).permutation(n)
    return np.array_split(idx, k)


def cross_validate(
    w: np.ndarray,
    y: np.ndarray,
    family: str,
    folds: int = 5,
    seed: int = 0,
    level: float = 0.9,
    groups: tuple[int, ...] | None = None,
) -> tuple[CVScore, np.ndarray]:
    """k-fold CV of one family; returns the scores and the out-of-fold predictions."""
    oof = np.full(len(y), np.nan)
    lo_all, hi_all = np.full(len(y), np.nan), np.full(len(y), np.nan)
    try:
        for test in _folds(len(y), folds, seed):
            train = np.ones(len(y), bool)
            train[test] = False
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = make_family(family, groups).fit(w[train], y[train])
                mean, lo, hi = model.interval(w[test], level)
            oof[test], lo_all[test], hi_all[test] = mean, lo, hi
    except (ValueError, np.linalg.LinAlgError) as e:
        nan = float("nan")
        return CVScore(family, nan, nan, nan, nan, str(e)), oof
    if not np.all(np.isfinite(oof)):
        nan = float("nan")
        return CVScore(family, nan, nan, nan, nan, "non-finite predictions"), oof
    err = oof - y
    why = implausible(float(np.sqrt(np.mean(err**2))), y)
    if why:
        nan = float("nan")
        return CVScore(family, nan, nan, nan, nan, why), oof
    rho = float(stats.spearmanr(oof, y)[0]) if np.ptp(y) > 0 else float("nan")
    return (
        CVScore(
            family,
            float(np.sqrt(np.mean(err**2))),
            float(np.mean(np.abs(err))),
            rho,
            coverage(y, oof, lo_all, hi_all).share,
            interval_scale=interval_scale(y, oof, lo_all, hi_all, level),
        ),
        oof,
    )


@dataclass
class Surface:
    """A fitted response surface for one metric: the chosen family and the CV table."""

    metric: str
    mixture_cols: tuple[str, ...]
    family: str
    model: object
    cv: list[CVScore] = field(default_factory=list)
    folds: int = 5
    level: float = 0.9
    n_train: int = 0
    interval_scale: float = 1.0  # from cross-validation (SurfaceConfig.calibrate)
    groups: tuple[int, ...] | None = None  # one simplex per stage (analysis.layout); None: one
    fitted: dict = field(default_factory=dict)  # every family refitted (keep_all); not saved

    def predict(self, w: np.ndarray) -> np.ndarray:
        """Point predictions of the metric at mixtures `w` (runs x domains)."""
        return self.model.predict(self._check(w))

    def interval(self, w: np.ndarray, level: float | None = None):
        """Mean and prediction-interval bounds (for a new run) at `level` (default 0.9).

        The family's own interval, widened or narrowed by `interval_scale`: the factor that
        made `self.level` of the out-of-fold runs fall inside (at other levels the same
        factor is applied).
        """
        mean, lo, hi = self.model.interval(self._check(w), self.level if level is None else level)
        return widen(mean, lo, hi, self.interval_scale)

    def _check(self, w: np.ndarray) -> np.ndarray:
        w = np.atleast_2d(np.asarray(w, float))
        if w.shape[1] != len(self.mixture_cols):
            raise CodemixError(
                f"surface for {self.metric} takes {len(self.mixture_cols)} weights, "
                f"got {w.shape[1]}"
            )
        return w

    @property
    def cv_score(self) -> CVScore | None:
        return next((c for c in self.cv if c.family == self.family), None)

    def to_dict(self) -> dict:
        return {
            "metric": self.metric,
            "mixture_cols": list(self.mixture_cols),
            "groups": list(self.groups or (len(self.mixture_cols),)),
            "family": self.family,
            "selection": f"lowest out-of-fold RMSE, {self.folds}-fold CV on {self.n_train} runs",
            "members": [m.name for m in getattr(self.model, "members", [])],
            "cv": [c.to_dict() for c in self.cv],
            "folds": self.folds,
            "level": self.level,
            "n_train": self.n_train,
            "interval_scale": self.interval_scale,
            "model": self.model.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Surface:
        return cls(
            metric=d["metric"],
            mixture_cols=tuple(d["mixture_cols"]),
            family=d["family"],
            model=family_from_dict(d["model"]),
            cv=[CVScore(**c) for c in d.get("cv", [])],
            folds=int(d.get("folds", 5)),
            level=float(d.get("level", 0.9)),
            n_train=int(d.get("n_train", 0)),
            interval_scale=float(d.get("interval_scale", 1.0)),
            groups=as_groups(d.get("groups")),
        )


@quiet_numerics()
def fit_surface(
    w: np.ndarray,
    y: np.ndarray,
    metric: str,
    mixture_cols: tuple[str, ...] | list[str],
    config: SurfaceConfig | None = None,
    progress: bool = False,
    keep_all: bool = False,
    groups: tuple[int, ...] | None = None,
) -> Surface:
    """Cross-validate every family in `config`, refit the best on all runs.

    A family that fails (cannot be fitted, or `implausible` CV error) keeps its error in
    the CV table and takes no part in the choice or the stack.

    `groups` splits the columns of `w` into one mixture per stage (see `analysis.layout`);
    by default they are one mixture.

    With `keep_all`, every family that could be fitted is refitted on all runs too and kept
    in `Surface.fitted` (for benchmarks comparing the candidates).
    """
    config = config or SurfaceConfig()
    w = np.asarray(w, float)
    y = np.asarray(y, float)
    if len(y) < 2 * config.folds:
        raise CodemixError(
            f"{metric}: {len(y)} runs are too few for {config.folds}-fold cross-validation "
            f"(it needs {2 * config.folds}); train more trials"
            + (f", or give fewer folds (--folds {len(y) // 2})" if len(y) >= 4 else "")
        )
    d = w.shape[1]
    if groups is not None:
        groups = check_groups(groups, d)
    candidates = [f for f in config.families if make_family(f, groups).n_params(d) < len(y) * 0.8]
    if not candidates:
        raise CodemixError(f"{metric}: every model family has too many terms for {len(y)} runs")
    scores: list[CVScore] = []
    oofs: dict[str, np.ndarray] = {}
    for fam in track(candidates, desc=f"CV {metric}", unit="family", enabled=progress):
        score, oof = cross_validate(w, y, fam, config.folds, config.seed, config.level, groups)
        scores.append(score)
        if np.isfinite(score.rmse):
            oofs[score.family] = oof
    if config.stack and len(oofs) >= 2:
        scores.append(_stack_cv(oofs, y, config))
    ok = [s for s in scores if np.isfinite(s.rmse)]
    if not ok:
        raise CodemixError(
            f"{metric}: no model family could be fitted ("
            + "; ".join(f"{s.family}: {s.error}" for s in scores)
            + ")"
        )
    chosen = min(ok, key=lambda s: s.rmse)
    best = chosen.family
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = {f: make_family(f, groups).fit(w, y) for f in oofs} if keep_all else {}
        if best == "stack" or (keep_all and config.stack and len(oofs) >= 2):
            fitted["stack"] = _fit_stack(w, y, oofs, config, fitted, groups)
        if best == "stack":
            model = fitted["stack"]
        else:
            model = fitted.get(best) or make_family(best, groups).fit(w, y)
    return Surface(
        metric=metric,
        mixture_cols=tuple(mixture_cols),
        family=best,
        model=model,
        cv=scores,
        folds=config.folds,
        level=config.level,
        n_train=len(y),
        interval_scale=chosen.interval_scale if config.calibrate else 1.0,
        groups=groups,
        fitted=fitted,
    )


def _stack_oof(oofs: dict[str, np.ndarray], y: np.ndarray, config: SurfaceConfig) -> np.ndarray:
    """Out-of-fold stack predictions, the weights of each fold fitted on the other folds."""
    names = list(oofs)
    p = np.stack([oofs[n] for n in names], 1)
    out = np.empty(len(y))
    for test in _folds(len(y), config.folds, config.seed):
        train = np.ones(len(y), bool)
        train[test] = False
        out[test] = p[test] @ stack_weights(p[train], y[train])
    return out


def _stack_cv(oofs: dict[str, np.ndarray], y: np.ndarray, config: SurfaceConfig) -> CVScore:
    pred = _stack_oof(oofs, y, config)
    resid = y - pred
    why = implausible(float(np.sqrt(np.mean(resid**2))), y)
    if why:
        nan = float("nan")
        return CVScore("stack", nan, nan, nan, nan, why)
    lo, hi = np.empty(len(y)), np.empty(len(y))
    for test in _folds(len(y), config.folds, config.seed):
        train = np.ones(len(y), bool)
        train[test] = False
        q_lo, q_hi = central(resid[train], config.level)
        lo[test], hi[test] = pred[test] + q_lo, pred[test] + q_hi
    return CVScore(
        "stack",
        float(np.sqrt(np.mean(resid**2))),
        float(np.mean(np.abs(resid))),
        float(stats.spearmanr(pred, y)[0]),
        coverage(y, pred, lo, hi).share,
        interval_scale=interval_scale(y, pred, lo, hi, config.level),
    )


def _fit_stack(
    w, y, oofs: dict[str, np.ndarray], config: SurfaceConfig, fitted=None, groups=None
) -> Stack:
    names = list(oofs)
    a = stack_weights(np.stack([oofs[n] for n in names], 1), y)
    keep = [i for i in range(len(names)) if a[i] > 1e-3]
    fitted = fitted or {}
    members = [fitted.get(names[i]) or make_family(names[i], groups).fit(w, y) for i in keep]
    resid = y - _stack_oof(oofs, y, config)
    return Stack(members, a[keep] / a[keep].sum(), resid)
