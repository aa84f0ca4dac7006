"""Scaling curves: L(N) = E + A N^-alpha, the Chinchilla law L(N, D) = E + A/N^alpha + B/D^beta
(Approach 3 as in Hoffmann et al. 2022 / Besiroglu et al. 2024), and bootstrap intervals.

Approach 3: with a = log A, b = log B, e = log E, the predicted log-loss is
logsumexp(a - alpha log N, b - beta log D, e); the objective is the SUM over runs of the
Huber loss (delta 1e-3) of predicted minus observed log-loss, minimised with L-BFGS-B from
a grid of starts, keeping the best. The grid (4,500 points by default, as Besiroglu et al.)
is ranked by its objective and L-BFGS-B runs from the best `refine_starts` of it (all of
it with `refine_starts=0`). The bootstrap resamples runs with replacement and refits from
the full-data optimum and the grid's best few starts. Every law here (these two and the
joint mixture-and-size law) is fitted by the one function `analysis.huber.fit_log_huber`,
given the law's log-terms as a design and its grid of starts.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field

import numpy as np

from codemix.analysis._lawterms import BOUNDS
from codemix.analysis.huber import fit_log_huber, log_predict
from codemix.analysis.intervals import central, coverage, interval_scale, predictive_band, widen
from codemix.analysis.layout import as_groups, check_groups, linear_design, quadratic_design
from codemix.core.errors import CodemixError

__all__ = [
    "ChinchillaFit",
    "JointLawFit",
    "PowerLawFit",
    "ScalingConfig",
    "fit_chinchilla",
    "alpha_warning",
    "exponent_warnings",
    "choose_joint_law",
    "fit_joint_law",
    "fit_power_law",
]

PARAM_NAMES = ("E", "A", "B", "alpha", "beta")
# size exponents of published laws (Kaplan et al., Chinchilla, the data-mixing literature)
PUBLISHED_ALPHA = (0.05, 1.5)
# data exponents likewise (Chinchilla 0.28, Muennighoff et al. about 0.35), with the same slack
PUBLISHED_BETA = (0.05, 1.5)


@dataclass(frozen=True)
class ScalingConfig:
    """Fit settings: Huber delta, start grid (per raw parameter), bootstrap count and seed."""

    delta: float = 1e-3
    grid_alpha: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0)
    grid_beta: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0)
    grid_e: tuple[float, ...] = (-1.0, -0.5, 0.0, 0.5, 1.0)
    grid_a: tuple[float, ...] = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
    grid_b: tuple[float, ...] = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
    refine_starts: int = 200  # L-BFGS runs from this many best grid points (0: all of them)
    n_boot: int = 1000
    boot_starts: int = 1
    seed: int = 0
    level: float = 0.9
    jobs: int = 1  # processes for bootstrap refits and the size-law contest's held-out fits

    def __post_init__(self) -> None:
        if self.delta <= 0:
            raise CodemixError(f"Huber delta must be > 0, got {self.delta}")
        if isinstance(self.jobs, bool) or not isinstance(self.jobs, int) or self.jobs < 1:
            raise CodemixError(f"jobs must be a whole number >= 1, got {self.jobs!r}")
        if self.n_boot < 0:
            raise CodemixError(f"n_boot must be >= 0, got {self.n_boot}")
        if not 0 < self.level < 1:
            raise CodemixError(f"level must be in (0, 1), got {self.level}")
        for name in ("grid_alpha", "grid_beta", "grid_e", "grid_a", "grid_b"):
            if not getattr(self, name):
                raise CodemixError(f"{name} must not be empty")


def _check_positive(name: str, v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, float)
    if v.ndim != 1 or len(v) == 0:
        raise CodemixError(f"{name} must be a non-empty 1-d array")
    if not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise CodemixError(f"{name} must be finite and > 0 in every row")
    return v


def _in_order(*cols: np.ndarray) -> tuple[np.ndarray, ...]:
    """The runs sorted by their values (first column first): the bootstrap draws rows by
    index and L-BFGS-B sums them in order, so a fit must not turn on how the rows came."""
    order = np.lexsort(cols[::-1])
    return tuple(c[order] for c in cols)


def _fit(
    design, y, grid, cfg: ScalingConfig, progress: bool, desc: str, boot_starts=None, bounds=None
):
    """`fit_log_huber` with the settings of `cfg`."""
    return fit_log_huber(
        design,
        np.log(y),
        grid,
        cfg.delta,
        cfg.refine_starts,
        cfg.n_boot,
        cfg.boot_starts if boot_starts is None else boot_starts,
        cfg.seed,
        progress,
        desc,
        cfg.jobs,
        bounds,
    )


@dataclass
class ChinchillaFit:
    """E, A, B, alpha, beta with bootstrap draws (rows: resamples, cols: PARAM_NAMES)."""

    params: dict[str, float]
    objective: float
    n_runs: int
    boot: np.ndarray = field(default_factory=lambda: np.empty((0, 5)))
    delta: float = 1e-3
    level: float = 0.9

    @property
    def se(self) -> dict[str, float]:
        if len(self.boot) < 2:
            return {k: float("nan") for k in PARAM_NAMES}
        return dict(zip(PARAM_NAMES, self.boot.std(0, ddof=1).tolist(), strict=True))

    def predict(self, n_params, tokens) -> np.ndarray:
        p = self.params
        n = np.asarray(n_params, float)
        d = np.asarray(tokens, float)
        return p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"]

    def predict_interval(self, n_params, tokens, level: float | None = None):
        """Point prediction and the bootstrap percentile interval of the mean loss."""
        level = self.level if level is None else level
        mean = self.predict(n_params, tokens)
        if len(self.boot) < 2:
            return mean, mean * np.nan, mean * np.nan
        b = self.boot
        n = np.asarray(n_params, float)[..., None]
        d = np.asarray(tokens, float)[..., None]
        draws = b[:, 0] + b[:, 1] / n ** b[:, 3] + b[:, 2] / d ** b[:, 4]
        return (mean, *central(draws, level))

    def to_dict(self) -> dict:
        return {
            "form": "chinchilla",
            "law": "L(N, D) = E + A / N^alpha + B / D^beta",
            "fit": f"summed Huber loss (delta {self.delta}) on log residuals, L-BFGS-B, grid",
            "params": self.params,
            "bootstrap_se": self.se,
            "n_boot": len(self.boot),
            "n_runs": self.n_runs,
            "objective": self.objective,
            "level": self.level,
            "boot": self.boot.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> ChinchillaFit:
        boot = np.asarray(d.get("boot", []), float).reshape(-1, 5)
        return cls(
            dict(d["params"]),
            float(d["objective"]),
            int(d["n_runs"]),
            boot,
            level=float(d.get("level", 0.9)),
        )


def _chin_design(n: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Log-terms of theta = (a, alpha, b, beta, e): a - alpha log N, b - beta log D, e."""
    one, zero, ln, ld = np.ones(len(n)), np.zeros(len(n)), np.log(n), np.log(d)
    return np.stack(
        [
            np.c_[one, -ln, zero, zero, zero],
            np.c_[zero, zero, one, -ld, zero],
            np.c_[zero, zero, zero, zero, one],
        ]
    )


def _chin_params(th: np.ndarray) -> np.ndarray:
    """theta rows (a, alpha, b, beta, e) -> rows of PARAM_NAMES (E, A, B, alpha, beta)."""
    a, alpha, b, beta, e = np.atleast_2d(th).T
    return np.c_[np.exp(e), np.exp(a), np.exp(b), alpha, beta]


def fit_chinchilla(
    n_params, tokens, loss, config: ScalingConfig | None = None, progress: bool = False
) -> ChinchillaFit:
    """Approach 3 on runs with parameters N, tokens D and final loss L."""
    cfg = config or ScalingConfig()
    n = _check_positive("parameters", n_params)
    d = _check_positive("tokens", tokens)
    y = _check_positive("loss", loss)
    if not len(n) == len(d) == len(y):
        raise CodemixError("parameters, tokens and loss differ in length")
    if len(y) < 6:
        raise CodemixError(f"the Chinchilla law has 5 parameters; {len(y)} runs are too few")
    n, d, y = _in_order(n, d, y)
    grid = [
        (a, al, b, be, e)
        for a, b, e, al, be in itertools.product(
            cfg.grid_a, cfg.grid_b, cfg.grid_e, cfg.grid_alpha, cfg.grid_beta
        )
    ]
    fit = _fit(_chin_design(n, d), y, grid, cfg, progress, "bootstrap chinchilla")
    params = dict(zip(PARAM_NAMES, _chin_params(fit.theta)[0].tolist(), strict=True))
    return ChinchillaFit(
        params, fit.loss, len(y), _chin_params(fit.boot).reshape(-1, 5), cfg.delta, cfg.level
    )


@dataclass
class PowerLawFit:
    """L(N) = E + A N^-alpha for one mixture (or one series), with bootstrap draws."""

    params: dict[str, float]
    objective: float
    n_runs: int
    boot: np.ndarray = field(default_factory=lambda: np.empty((0, 3)))
    level: float = 0.9

    @property
    def se(self) -> dict[str, float]:
        if len(self.boot) < 2:
            return {k: float("nan") for k in ("E", "A", "alpha")}
        return dict(zip(("E", "A", "alpha"), self.boot.std(0, ddof=1).tolist(), strict=True))

    def predict(self, n_params) -> np.ndarray:
        p = self.params
        return p["E"] + p["A"] * np.asarray(n_params, float) ** -p["alpha"]

    def predict_interval(self, n_params, level: float | None = None):
        level = self.level if level is None else level
        mean = self.predict(n_params)
        if len(self.boot) < 2:
            return mean, mean * np.nan, mean * np.nan
        n = np.asarray(n_params, float)[..., None]
        b = self.boot
        draws = b[:, 0] + b[:, 1] * n ** -b[:, 2]
        return (mean, *central(draws, level))

    def to_dict(self) -> dict:
        return {
            "form": "power",
            "law": "L(N) = E + A * N^-alpha",
            "params": self.params,
            "bootstrap_se": self.se,
            "n_runs": self.n_runs,
            "objective": self.objective,
            "level": self.level,
            "boot": self.boot.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> PowerLawFit:
        boot = np.asarray(d.get("boot", []), float).reshape(-1, 3)
        return cls(
            dict(d["params"]),
            float(d["objective"]),
            int(d["n_runs"]),
            boot,
            float(d.get("level", 0.9)),
        )


def fit_power_law(
    n_params, loss, config: ScalingConfig | None = None, progress: bool = False
) -> PowerLawFit:
    """L(N) = E + A N^-alpha by the same summed Huber loss on log residuals."""
    cfg = config or ScalingConfig()
    n = _check_positive("parameters", n_params)
    y = _check_positive("loss", loss)
    if len(n) != len(y):
        raise CodemixError("parameters and loss differ in length")
    if len(np.unique(n)) < 3:
        raise CodemixError(
            f"L(N) = E + A N^-alpha needs runs at 3 or more sizes; got {len(np.unique(n))}"
        )
    n, y = _in_order(n, y)
    one, zero = np.ones(len(n)), np.zeros(len(n))
    # theta = (a, alpha, e): log-terms a - alpha log N and e
    design = np.stack([np.c_[one, -np.log(n), zero], np.c_[zero, zero, one]])
    grid = list(itertools.product(cfg.grid_a, cfg.grid_alpha, cfg.grid_e))
    fit = _fit(design, y, grid, cfg, progress, "bootstrap power law")

    def to_params(th):  # rows (E, A, alpha)
        a, alpha, e = np.atleast_2d(th).T
        return np.c_[np.exp(e), np.exp(a), alpha]

    params = dict(zip(("E", "A", "alpha"), to_params(fit.theta)[0].tolist(), strict=True))
    return PowerLawFit(params, fit.loss, len(y), to_params(fit.boot).reshape(-1, 3), cfg.level)


@dataclass
class JointLawFit:
    """L(r, N) = E(r) + A(r) N^-alpha with log E(r) = e.x(r) and log A(r) = a.x(r), x the
    Scheffe-linear terms of the mixture r (of every stage's mixture, with `groups`), alpha
    shared; with `terms="quadratic"` log E(r) takes the Scheffe-quadratic terms. Bootstrap
    draws of (e, a, alpha) give intervals.

    Runs at each size should use the same tokens per parameter (the ladder's rule), since
    the law has no separate data term.
    """

    mixture_cols: tuple[str, ...]
    theta: np.ndarray
    objective: float
    n_runs: int
    sizes: tuple[float, ...]
    boot: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    resid_log: np.ndarray = field(default_factory=lambda: np.empty(0))
    level: float = 0.9
    groups: tuple[int, ...] | None = None
    terms: str = "linear"  # Scheffe terms in log E(r): "linear" or "quadratic"
    selection: dict = field(default_factory=dict)  # held-out error of each candidate law
    # widening of the intervals found by predicting the largest size from the smaller ones
    interval_scale: float = 1.0
    tied: tuple = ()  # laws the held-out contest could not tell from this one (`span_tied`)
    # the best data-constrained law, fitted once where the runs' epochs are known: this law
    # has no term for repetition, and that one says what a target reads against the ladder
    # (`regime.beyond_ladder`, `target_epochs`); it predicts nothing here
    regime: object = None
    # log-sd per epoch a row reads a domain beyond the ladder's most (counted by `regime`),
    # calibrated on the most-read runs held out (`contest._calibrate_repetition`)
    repetition_sd: float = 0.0
    tie_point: str = "winner"  # the point of `interval` where there is a tie (`datalaw.tie_point`)

    @property
    def alpha(self) -> float:
        return float(self.theta[-1])

    @property
    def ke(self) -> int:
        """Terms of log E(r); log A(r) has the rest but alpha."""
        d = sum(self.groups or (len(self.mixture_cols),))
        return _law_design(np.full((1, d), 0.5), self.groups, self.terms)[0].shape[1]

    def _draws(self, w: np.ndarray, n, thetas: np.ndarray) -> np.ndarray:
        """(runs x thetas) predictions at size `n`, one for all runs or one per run."""
        xe, xa = _law_design(np.atleast_2d(w), self.groups, self.terms)
        ke = xe.shape[1]
        e, a, alpha = thetas[:, :ke], thetas[:, ke:-1], thetas[:, -1]
        log_n = np.log(np.broadcast_to(np.asarray(n, float), (len(xe),)))
        log_e = np.clip(xe @ e.T, -50, 50)
        log_a = np.clip(xa @ a.T - alpha[None, :] * log_n[:, None], -50, 50)
        return np.exp(log_e) + np.exp(log_a)

    form = "joint"

    def predict(self, w: np.ndarray, n_params, data=None) -> np.ndarray:
        """`data` (what the target's tokens are) is for laws with a data term: unused."""
        return self._draws(np.atleast_2d(w), n_params, self.theta[None, :])[:, 0]

    def interval(self, w: np.ndarray, n_params, level: float | None = None, data=None):
        """Mean, and bootstrap percentile bounds widened by the log-residual spread (a
        prediction interval for one new run)."""
        from codemix.analysis.datalaw import span_tied, tie_point, tied_predictions

        level = self.level if level is None else level
        w = np.atleast_2d(w)
        mean = self.predict(w, n_params)
        tied = tied_predictions(self, w, n_params, data)
        point = tie_point(self, mean, tied)
        if len(self.boot) < 2:
            return point, mean * np.nan, mean * np.nan
        draws = self._draws(w, n_params, self.boot)
        lo, hi = predictive_band(draws, self.resid_log, level, self.repetition(w, n_params, data))
        mean, lo, hi = widen(mean, lo, hi, self.interval_scale)
        return point, *span_tied(mean, lo, hi, tied)

    def boot_predictions(self, w: np.ndarray, n_params, data=None) -> np.ndarray:
        """Mean predictions under each bootstrap draw (runs x draws)."""
        return self._draws(np.atleast_2d(w), n_params, self.boot)

    def repetition(self, w: np.ndarray, n_params, data=None) -> np.ndarray:
        """The log-normal spread of the error where a row reads a domain more often than any
        fitted run did (0 within), its epochs counted by the data law beside this one."""
        if self.regime is None:
            return np.zeros(len(np.atleast_2d(w)))
        return self.regime.repetition(w, n_params, data, sd=self.repetition_sd)

    def to_dict(self) -> dict:
        ke = self.ke
        return {
            "form": "joint",
            "law": f"L(r, N) = exp(e.x(r)) + exp(a.x(r)) * N^-alpha, x: Scheffe-{self.terms} terms",
            "terms": self.terms,
            "selection": self.selection,
            "interval_scale": self.interval_scale,
            "mixture_cols": list(self.mixture_cols),
            "groups": list(self.groups or (len(self.mixture_cols),)),
            "e": self.theta[:ke].tolist(),
            "a": self.theta[ke:-1].tolist(),
            "alpha": float(self.theta[-1]),
            "objective": self.objective,
            "n_runs": self.n_runs,
            "sizes": list(self.sizes),
            "level": self.level,
            "boot": self.boot.tolist(),
            "resid_log": self.resid_log.tolist(),
            "tied": [t.to_dict() for t in self.tied],
            "regime": None if self.regime is None else self.regime.to_dict(),
            "repetition_sd": self.repetition_sd,
            "tie_point": self.tie_point,
        }

    @classmethod
    def from_dict(cls, d: dict) -> JointLawFit:
        from codemix.analysis.datalaw import check_tie_point, law_from_dict

        theta = np.r_[d["e"], d["a"], d["alpha"]]
        boot = np.asarray(d.get("boot", []), float).reshape(-1, len(theta))
        return cls(
            tuple(d["mixture_cols"]),
            theta,
            float(d["objective"]),
            int(d["n_runs"]),
            tuple(d["sizes"]),
            boot,
            np.asarray(d.get("resid_log", []), float),
            float(d.get("level", 0.9)),
            as_groups(d.get("groups")),
            d.get("terms", "linear"),
            d.get("selection", {}),
            float(d.get("interval_scale", 1.0)),
            tuple(law_from_dict(x) for x in d.get("tied", ())),
            law_from_dict(d["regime"]) if d.get("regime") else None,
            float(d.get("repetition_sd", 0.0)),
            check_tie_point(d.get("tie_point", "winner"), "FIT.json: tie_point"),
        )


def fit_joint_law(
    w,
    n_params,
    loss,
    mixture_cols,
    config: ScalingConfig | None = None,
    progress: bool = False,
    groups: tuple[int, ...] | None = None,
    terms: str = "linear",
) -> JointLawFit:
    """Fit the joint mixture-and-size law on runs at several sizes (summed Huber, log space).

    `groups` splits the columns into one mixture per stage (see `analysis.layout`); `terms`
    picks Scheffe-linear or -quadratic exponents (quadratic allows an optimum inside the
    simplex at every size)."""
    cfg = config or ScalingConfig()
    w = np.atleast_2d(np.asarray(w, float))
    if groups is not None:
        groups = check_groups(groups, w.shape[1])
    xe, xa = _law_design(w, groups, terms)
    n = _check_positive("parameters", n_params)
    y = _check_positive("loss", loss)
    if not len(w) == len(n) == len(y):
        raise CodemixError("weights, parameters and loss differ in length")
    if len(np.unique(n)) < 3:
        raise CodemixError(f"a size law needs runs at 3 or more sizes; got {len(np.unique(n))}")
    ke, k = xe.shape[1], xa.shape[1]
    if len(y) <= ke + k + 1:
        raise CodemixError(f"the joint law has {ke + k + 1} parameters; {len(y)} runs are too few")
    e0 = np.log(0.8 * y.min())
    # constant starts: the first group's terms sum to one, later groups' terms start at zero
    g0 = (groups or (k,))[0]
    one_e, one_a = np.r_[np.ones(g0), np.zeros(ke - g0)], np.r_[np.ones(g0), np.zeros(k - g0)]
    starts = [np.r_[e0 * one_e, a0 * one_a, al0] for a0 in (2.0, 8.0) for al0 in (0.2, 0.5)]
    # theta = (e, a, alpha): log-terms e.x_E(r) and a.x_A(r) - alpha log N
    zero = np.zeros(len(y))
    design = np.stack(
        [np.c_[xe, np.zeros_like(xa), zero], np.c_[np.zeros_like(xe), xa, -np.log(n)]]
    )
    # alpha bounded as in the data-constrained law (`_lawterms.BOUNDS`), of which this law is
    # the special case: the contest between them must not give one a freedom the other lacks
    bounds = [(None, None)] * (ke + k) + [BOUNDS["alpha"]]
    # the bootstrap refits from the full-data optimum alone
    fit = _fit(design, y, starts, cfg, progress, "bootstrap joint law", 0, bounds)
    return JointLawFit(
        tuple(mixture_cols),
        fit.theta,
        fit.loss,
        len(y),
        tuple(sorted(float(v) for v in np.unique(n))),
        fit.boot,
        np.log(y) - log_predict(design, fit.theta),
        cfg.level,
        groups,
        terms,
    )


def alpha_warning(alpha: float) -> str:
    """Why a fitted size exponent makes predictions at a target unreliable, or '' if it lies
    within PUBLISHED_ALPHA: outside it, the sizes fitted did not pin the law down."""
    lo, hi = PUBLISHED_ALPHA
    if lo <= alpha <= hi:
        return ""
    return (
        f"alpha is far from the {lo:g}-{hi:g} of published size laws; these sizes do not pin "
        "the law down, so predictions at a target are unreliable"
    )


def exponent_warnings(law) -> list[str]:
    """`alpha_warning`, and for a data-constrained law the same for its data exponent beta:
    far outside PUBLISHED_BETA, the ladder's token counts did not pin the data term down, and
    at a target's token budget it can take the predicted loss anywhere."""
    out = [w for w in (alpha_warning(law.alpha),) if w]
    beta = getattr(law, "beta", None)
    lo, hi = PUBLISHED_BETA
    if beta is not None and not lo <= beta <= hi:
        out.append(
            f"beta {beta:.3g}, the data exponent, is far from the {lo:g}-{hi:g} of published "
            "laws; the ladder's token counts do not pin it down, so predictions at a target's "
            "token budget are unreliable"
        )
    return out


def few_sizes_warning(law) -> str:
    """Where the law rests on fewer than 4 sizes: it could not hold the largest out to check
    itself, so nothing widened its intervals by what it would miss one size up."""
    if len(law.sizes) >= 4:
        return ""
    return (
        f"the size law rests on {len(law.sizes)} sizes; with 4 or more the fit checks itself "
        "on the largest one and widens its intervals by what it missed"
    )


def _law_design(w: np.ndarray, groups, terms: str) -> tuple[np.ndarray, np.ndarray]:
    """Terms of log E(r) and of log A(r). Quadratic terms go into E only: the asymptote is
    what decides the best mixture at a large target, and a curved A(r) next to a free alpha
    is more than a short ladder of sizes can pin down."""
    x = linear_design(w, groups)
    if terms == "linear":
        return x, x
    if terms == "quadratic":
        return quadratic_design(w, groups), x
    raise CodemixError(f"unknown law terms {terms!r}: use linear or quadratic")


def choose_joint_law(
    w,
    n_params,
    loss,
    mixture_cols,
    config: ScalingConfig | None = None,
    progress: bool = False,
    groups: tuple[int, ...] | None = None,
    folds: int = 5,
) -> JointLawFit:
    """The joint law with Scheffe-linear or -quadratic exponents, whichever predicts held-out
    runs better: the largest size from the smaller ones when there are 4+ sizes (the
    extrapolation the law is for), else k-fold over runs. The chosen law is then fitted on
    all runs with its bootstrap; the held-out errors go into `selection`.

    With 4+ sizes the intervals are also checked on that extrapolation: the law fitted
    below the largest size, with its own bootstrap, predicts the largest size, and if fewer
    than `level` of those runs fall inside their intervals, every interval of the final law
    is widened by the factor that would have put them inside (split-conformal across one
    step of the ladder; never narrowed, since the target usually lies further out)."""
    cfg = config or ScalingConfig()
    w = np.atleast_2d(np.asarray(w, float))
    n = _check_positive("parameters", n_params)
    y = _check_positive("loss", loss)
    sizes = np.unique(n)
    quick = dataclasses.replace(cfg, n_boot=0)
    if len(sizes) >= 4:
        splits = [n == sizes[-1]]
        how = f"fitted below {sizes[-1]:.3g} parameters, scored at it"
    else:
        order = np.random.default_rng(cfg.seed).permutation(len(y))
        splits = [np.isin(np.arange(len(y)), part) for part in np.array_split(order, folds)]
        how = f"{folds}-fold over runs"
    scores = {}
    for terms in ("linear", "quadratic"):
        r = np.full(len(y), np.nan)
        try:
            for test in splits:
                law = fit_joint_law(
                    w[~test], n[~test], y[~test], mixture_cols, quick, False, groups, terms
                )
                for size in np.unique(n[test]):
                    at = test & (n == size)
                    r[at] = np.log(law.predict(w[at], size)) - np.log(y[at])
        except CodemixError as e:
            scores[terms] = {"rmse_log": float("nan"), "error": str(e)}
            continue
        r = r[np.any(splits, axis=0)]
        scores[terms] = {"rmse_log": float(np.sqrt(np.mean(r**2)))}
    ok = {t: v["rmse_log"] for t, v in scores.items() if np.isfinite(v["rmse_log"])}
    best = min(ok, key=ok.get) if ok else "linear"
    fit = fit_joint_law(w, n, y, mixture_cols, cfg, progress, groups, best)
    fit.selection = {"held_out": how, "scores": scores, "chosen": best}
    if len(sizes) >= 4 and cfg.n_boot >= 2 and best in ok:
        test = splits[0]
        sub_cfg = dataclasses.replace(cfg, n_boot=min(cfg.n_boot, 100))
        sub = fit_joint_law(
            w[~test], n[~test], y[~test], mixture_cols, sub_cfg, False, groups, best
        )
        mean, lo, hi = sub.interval(w[test], sizes[-1])
        inside = coverage(y[test], mean, lo, hi).share
        fit.interval_scale = max(1.0, interval_scale(y[test], mean, lo, hi, cfg.level))
        fit.selection |= {"held_out_coverage": inside, "interval_scale": fit.interval_scale}
    return fit
