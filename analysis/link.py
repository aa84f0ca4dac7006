"""From a task's bits per byte to its accuracy: the second step of a two-step prediction
(Bhagia et al. 2024, "Establishing task scaling laws"):

    acc = chance + (top - chance) * sigmoid(-k (bpb - b0))

Proxies are often at chance on accuracy while their bpb still moves, so the size law is
fitted on bpb (step one) and this link carries it to accuracy (step two). The link is fitted
on the runs whose accuracy is above chance (any size: larger runs, where given, anchor the
upper part of the curve). Intervals carry both steps: the predicted bpb's own interval, the
link's parameters (bootstrap over runs) and the runs' scatter around the link.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import curve_fit
from scipy.special import expit
from scipy.stats import norm

from codemix.analysis.intervals import central
from codemix.core.errors import CodemixError

__all__ = ["AccuracyLink", "fit_link", "link_bpb_metric", "parse_link"]

MIN_RUNS = 4  # three parameters: one run more than that at least


def sigmoid_link(bpb, chance: float, top: float, k: float, b0: float):
    return chance + (top - chance) * expit(-k * (np.asarray(bpb, float) - b0))


@dataclass(frozen=True)
class AccuracyLink:
    metric: str  # the accuracy column, e.g. task.nl_reasoning.acc
    bpb_metric: str  # the bpb column it is predicted from, e.g. task.nl_reasoning.bpb
    chance: float
    params: np.ndarray  # top, k, b0
    boot: np.ndarray  # (draws, 3): the parameters refitted on resampled runs
    resid: np.ndarray  # accuracy minus link, on the runs fitted
    n_runs: int  # runs in the table
    bpb_range: tuple[float, float]  # of the runs fitted: outside it the link extrapolates

    @property
    def n_used(self) -> int:
        return len(self.resid)

    def mean(self, bpb, params=None) -> np.ndarray:
        return sigmoid_link(bpb, self.chance, *(self.params if params is None else params))

    def mean_draws(self, bpb_draws: np.ndarray) -> np.ndarray:
        """(rows, draws) of the mean accuracy: draw j takes the j-th bpb draw and the link's
        j-th bootstrap parameters (cycling)."""
        th = self.boot[np.arange(bpb_draws.shape[1]) % len(self.boot)]
        return sigmoid_link(bpb_draws, self.chance, th[:, 0], th[:, 1], th[:, 2])

    def interval(self, bpb_mean, bpb_lo, bpb_hi, level: float, n_draws: int = 2000, seed=0):
        """(mean, lo, hi) accuracy for one new run, from bpb's prediction interval (read as
        a normal of that width), the bootstrap parameters and the residual scatter."""
        rng = np.random.default_rng(seed)
        bpb_mean = np.asarray(bpb_mean, float)
        z_level = norm.ppf(0.5 + level / 2)
        sd = (np.asarray(bpb_hi, float) - np.asarray(bpb_lo, float)) / (2 * z_level)
        sd = np.where(np.isfinite(sd), np.maximum(sd, 0), 0.0)
        z = rng.standard_normal((len(bpb_mean), n_draws))
        draws = self.mean_draws(bpb_mean[:, None] + sd[:, None] * z)
        draws = draws + rng.choice(self.resid, size=draws.shape)
        lo, hi = central(draws, level, axis=1)
        return self.mean(bpb_mean), lo, hi

    def to_dict(self) -> dict:
        top, k, b0 = (float(x) for x in self.params)
        return {
            "metric": self.metric,
            "bpb_metric": self.bpb_metric,
            "form": "acc = chance + (top - chance) * sigmoid(-k (bpb - b0))",
            "chance": self.chance,
            "top": top,
            "k": k,
            "b0": b0,
            "boot": self.boot.round(6).tolist(),
            "resid": self.resid.round(6).tolist(),
            "rmse": float(np.sqrt(np.mean(self.resid**2))),
            "n_runs": self.n_runs,
            "n_used": self.n_used,
            "bpb_range": list(self.bpb_range),
        }

    @classmethod
    def from_dict(cls, d: dict) -> AccuracyLink:
        return cls(
            metric=d["metric"],
            bpb_metric=d["bpb_metric"],
            chance=float(d["chance"]),
            params=np.array([d["top"], d["k"], d["b0"]], float),
            boot=np.array(d["boot"], float).reshape(-1, 3),
            resid=np.array(d["resid"], float),
            n_runs=int(d["n_runs"]),
            bpb_range=tuple(d["bpb_range"]),
        )


def _fit_params(bpb: np.ndarray, acc: np.ndarray, chance: float, p0) -> np.ndarray:
    span = max(float(np.ptp(bpb)), 1e-3)
    lower = [chance + 1e-4, 1e-3 / span, bpb.min() - 5 * span]
    upper = [1.0, 1e3 / span, bpb.max() + 5 * span]
    p0 = np.clip(p0, np.array(lower) + 1e-9, np.array(upper) - 1e-9)

    def f(b, top, k, b0):
        return sigmoid_link(b, chance, top, k, b0)

    params, _ = curve_fit(f, bpb, acc, p0=p0, bounds=(lower, upper), maxfev=20000)
    return params


def fit_link(
    metric: str,
    bpb_metric: str,
    bpb: np.ndarray,
    acc: np.ndarray,
    chance: float,
    n_boot: int = 200,
    seed: int = 0,
) -> AccuracyLink:
    """The sigmoid link fitted on the runs whose accuracy is above chance."""
    if not 0 <= chance < 1:
        raise CodemixError(f"{metric}: chance level {chance} must be in [0, 1)")
    ok = np.isfinite(bpb) & np.isfinite(acc)
    use = ok & (acc > chance)
    if use.sum() < MIN_RUNS:
        raise CodemixError(
            f"{metric}: {int(use.sum())} of {int(ok.sum())} runs are above chance "
            f"({chance:.3g}); the link from {bpb_metric} needs {MIN_RUNS} or more (add larger "
            "or longer runs, or leave this --link out)"
        )
    b, a = bpb[use], acc[use]
    p0 = np.array([min(1.0, a.max() + 0.05), 2.0 / max(float(b.std()), 1e-3), float(np.median(b))])
    try:
        params = _fit_params(b, a, chance, p0)
    except (RuntimeError, ValueError) as e:
        raise CodemixError(f"{metric}: the link to {bpb_metric} did not converge ({e})") from None
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(n_boot):
        i = rng.integers(0, len(b), len(b))
        if np.ptp(b[i]) == 0:
            continue
        try:
            boot.append(_fit_params(b[i], a[i], chance, params))
        except (RuntimeError, ValueError):
            continue
    boot = np.array(boot) if boot else params[None, :]
    return AccuracyLink(
        metric=metric,
        bpb_metric=bpb_metric,
        chance=float(chance),
        params=params,
        boot=boot,
        resid=a - sigmoid_link(b, chance, *params),
        n_runs=int(ok.sum()),
        bpb_range=(float(b.min()), float(b.max())),
    )


def link_bpb_metric(acc_metric: str) -> str:
    """`task.F.acc` (or any `task.F.<metric>`) -> `task.F.bpb`."""
    head, _, tail = acc_metric.rpartition(".")
    if not head or tail == "bpb":
        raise CodemixError(
            f"--link {acc_metric}: give an accuracy column of a study export, e.g. "
            "task.nl_reasoning.acc (its bpb, task.nl_reasoning.bpb, must be a --metric)"
        )
    return f"{head}.bpb"


def parse_link(text: str) -> tuple[str, float | None]:
    """`task.F.acc` or `task.F.acc@0.25` (an explicit chance level) -> (column, chance)."""
    col, at, chance = text.partition("@")
    if not at:
        return col.strip(), None
    try:
        value = float(chance)
    except ValueError:
        raise CodemixError(f"--link {text}: the chance level after @ must be a number") from None
    return col.strip(), value
