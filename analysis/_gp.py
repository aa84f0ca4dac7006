"""A small Gaussian-process regressor: ARD squared-exponential kernel plus white noise,
hyperparameters by maximising the marginal likelihood (analytic gradient, L-BFGS-B).

Inputs are standardised features and a standardised target; the caller keeps the scales.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg, optimize

_JITTER = 1e-8


def kernel(a: np.ndarray, b: np.ndarray, ls: np.ndarray, sf: float) -> np.ndarray:
    """sf^2 exp(-|a - b|^2 / 2) with each feature divided by its length scale."""
    a = a / ls
    b = b / ls
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return sf**2 * np.exp(-0.5 * np.maximum(d2, 0.0))


def _nll(theta: np.ndarray, x: np.ndarray, t: np.ndarray) -> tuple[float, np.ndarray]:
    n, d = x.shape
    ls = np.exp(theta[:d])
    sf = float(np.exp(theta[d]))
    sn2 = float(np.exp(2 * theta[d + 1]))
    kf = kernel(x, x, ls, sf)
    k = kf + (sn2 + _JITTER) * np.eye(n)
    try:
        c = linalg.cho_factor(k, lower=True, check_finite=False)
    except linalg.LinAlgError:
        return 1e12, np.zeros_like(theta)
    alpha = linalg.cho_solve(c, t, check_finite=False)
    kinv = linalg.cho_solve(c, np.eye(n), check_finite=False)
    value = 0.5 * t @ alpha + np.log(np.diag(c[0])).sum() + 0.5 * n * np.log(2 * np.pi)
    w = np.outer(alpha, alpha) - kinv
    m = w * kf
    # d kf / d log ls_j = kf * (x_aj - x_bj)^2 / ls_j^2; sum over a, b via two products
    rows = m.sum(1)
    quad = 2.0 * ((x * x) * rows[:, None]).sum(0) - 2.0 * (x * (m @ x)).sum(0)
    grad = np.empty_like(theta)
    grad[:d] = -0.5 * quad / ls**2
    grad[d] = -0.5 * 2.0 * m.sum()
    grad[d + 1] = -0.5 * 2.0 * sn2 * np.trace(w)
    return float(value), grad


def fit_hyper(x: np.ndarray, t: np.ndarray, starts: tuple[tuple[float, float], ...] | None = None):
    """Length scales, signal sd and noise sd maximising the marginal likelihood."""
    _, d = x.shape
    if starts is None:
        starts = ((np.sqrt(d), 0.1), (np.sqrt(d), 0.5))
    bounds = [(-3.0, 7.0)] * d + [(-4.0, 4.0), (-7.0, 1.0)]
    best = None
    for ls0, sn0 in starts:
        theta0 = np.r_[np.full(d, np.log(ls0)), 0.0, np.log(sn0)]
        r = optimize.minimize(
            _nll,
            theta0,
            args=(x, t),
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": 300},
        )
        if best is None or r.fun < best.fun:
            best = r
    th = best.x
    return np.exp(th[:d]), float(np.exp(th[d])), float(np.exp(th[d + 1]))


class GPState:
    """A fitted GP on standardised inputs `x` and target `t`; predicts mean and sd in t units."""

    def __init__(self, x: np.ndarray, t: np.ndarray, ls: np.ndarray, sf: float, sn: float):
        self.x, self.t, self.ls, self.sf, self.sn = x, t, np.asarray(ls, float), sf, sn
        k = kernel(x, x, self.ls, sf) + (sn**2 + _JITTER) * np.eye(len(x))
        self._c = linalg.cho_factor(k, lower=True, check_finite=False)
        self._alpha = linalg.cho_solve(self._c, t, check_finite=False)

    def predict(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and predictive sd (including the noise) at standardised inputs `z`."""
        ks = kernel(z, self.x, self.ls, self.sf)
        mean = ks @ self._alpha
        v = linalg.cho_solve(self._c, ks.T, check_finite=False)
        var = self.sf**2 - np.einsum("ij,ji->i", ks, v)
        return mean, np.sqrt(np.maximum(var, 0.0) + self.sn**2)
