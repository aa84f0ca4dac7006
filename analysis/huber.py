"""The one fitter of every size law: summed Huber loss on log residuals, minimised with
L-BFGS-B from a grid of starts, with a bootstrap over runs (Approach 3 of Hoffmann et al.
2022, as Besiroglu et al. 2024 replicate it).

A law predicts log L as a logsumexp over terms, each linear in the parameters theta: term k
of run i is (design[k] @ theta)[i]. Chinchilla's L = E + A/N^alpha + B/D^beta has the terms
a - alpha log N, b - beta log D and e (a = log A, ...); the joint mixture law has e.x(r)
and a.x(r) - alpha log N. Linear terms give the exact gradient for free.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy.special import logsumexp, softmax
from threadpoolctl import threadpool_limits

from codemix.analysis._parallel import pmap
from codemix.core.errors import CodemixError
from codemix.core.progress import track

__all__ = ["LogHuberFit", "fit_log_huber", "huber", "log_predict"]

# one tolerance for every law: the Huber sums are ~1e-4 (delta 1e-3), so scipy's ftol acts
# as an absolute threshold and must sit far below them
OPTIONS = {"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-12}


def huber(r: np.ndarray, delta: float) -> np.ndarray:
    """Huber loss, elementwise: r^2/2 inside |r| <= delta, delta(|r| - delta/2) outside."""
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def log_predict(design: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Predicted log-loss of every run: the logsumexp of its terms (design: terms x runs x
    parameters)."""
    return logsumexp(design @ theta, axis=0)


def _objective(theta, design, log_y, delta):
    """Summed Huber loss of the log residuals, and its gradient."""
    z = design @ theta  # terms x runs
    r = logsumexp(z, axis=0) - log_y
    g = np.clip(r, -delta, delta) * softmax(z, axis=0)  # d loss / d z
    return float(huber(r, delta).sum()), np.tensordot(g, design, axes=([0, 1], [0, 1]))


def _ranked(design, log_y, starts: np.ndarray, delta: float, k: int) -> np.ndarray:
    """The `k` starts of lowest objective (all of them for k <= 0), best first."""
    z = np.einsum("knp,sp->skn", design, starts)
    values = huber(logsumexp(z, axis=1) - log_y, delta).sum(axis=1)
    order = np.argsort(values, kind="stable")
    return starts[order if k <= 0 else order[:k]]


def _minimise(design, log_y, starts, delta: float, bounds=None) -> optimize.OptimizeResult:
    """The best of L-BFGS-B from each start. With `bounds`, unbounded first, and bounded only
    where that optimum lies outside them: an inactive bound still moves L-BFGS-B's path, and
    on laws with near-equal minima (the data-constrained law started from this one's optimum)
    the path decides which minimum is found."""
    with threadpool_limits(1):  # BLAS threads only slow down problems this small (10x)
        best = _minimise_in(design, log_y, starts, delta)
        if bounds is None:
            return best
        lo = np.array([-np.inf if a is None else a for a, _ in bounds])
        hi = np.array([np.inf if b is None else b for _, b in bounds])
        if np.all((best.x >= lo) & (best.x <= hi)):
            return best
        return _minimise_in(design, log_y, [np.clip(s, lo, hi) for s in starts], delta, bounds)


def _minimise_in(design, log_y, starts, delta: float, bounds=None) -> optimize.OptimizeResult:
    best = None
    for s in starts:
        r = optimize.minimize(
            _objective,
            s,
            args=(design, log_y, delta),
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options=OPTIONS,
        )
        if np.isfinite(r.fun) and (best is None or r.fun < best.fun):
            best = r
    if best is None:
        raise CodemixError("the size law could not be fitted: no start reached a finite loss")
    return best


@dataclass(frozen=True)
class LogHuberFit:
    theta: np.ndarray
    loss: float  # the summed Huber loss at theta
    boot: np.ndarray  # (resamples, parameters): theta refitted on runs drawn with replacement


def _refit(*args) -> np.ndarray:
    return _minimise(*args).x


def fit_log_huber(
    design: np.ndarray,
    log_y: np.ndarray,
    grid,
    delta: float,
    refine: int = 0,
    n_boot: int = 0,
    boot_starts: int = 1,
    seed: int = 0,
    progress: bool = False,
    desc: str = "bootstrap",
    jobs: int = 1,
    bounds: list | None = None,
) -> LogHuberFit:
    """theta minimising sum_i huber(log_predict(design, theta)_i - log_y_i, delta).

    The `grid` of starts is ranked by its objective and L-BFGS-B runs from the best `refine`
    of it (all of it for refine <= 0); the lowest finite optimum wins. Each of `n_boot`
    resamples of the runs is refitted from that optimum and the grid's best `boot_starts`,
    on `jobs` processes (the same draws on one or many). `bounds`: (low, high) per
    parameter, None for none, as scipy takes them.
    """
    design = np.asarray(design, float)
    log_y = np.asarray(log_y, float)
    ranked = _ranked(design, log_y, np.atleast_2d(np.asarray(grid, float)), delta, refine)
    best = _minimise(design, log_y, ranked, delta, bounds)
    starts = np.vstack([best.x, ranked[:boot_starts]])
    rng = np.random.default_rng(seed)
    n = len(log_y)
    draws = [rng.integers(0, n, n) for _ in range(n_boot)]
    fits = pmap(_refit, [(design[:, i], log_y[i], starts, delta, bounds) for i in draws], jobs)
    boot = list(track(fits, n_boot, desc=desc, unit="fit", enabled=progress))
    return LogHuberFit(best.x, float(best.fun), np.array(boot).reshape(n_boot, len(best.x)))
