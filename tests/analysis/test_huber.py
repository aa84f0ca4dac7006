"""The one size-law fitter: summed Huber on log residuals, L-BFGS-B from a grid of starts."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize

from codemix.analysis.huber import _objective, fit_log_huber, huber, log_predict
from codemix.core.errors import CodemixError


def test_huber_is_quadratic_inside_linear_outside():
    r = np.array([0.0, 5e-4, -1e-3, 1e-2])
    np.testing.assert_allclose(huber(r, 1e-3), [0.0, 1.25e-7, 5e-7, 1e-3 * (1e-2 - 5e-4)])


def _power_design(n: np.ndarray) -> np.ndarray:
    """L(N) = E + A N^-alpha as log-terms of theta = (log A, alpha, log E)."""
    one, zero = np.ones(len(n)), np.zeros(len(n))
    return np.stack([np.c_[one, -np.log(n), zero], np.c_[zero, zero, one]])


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    n = np.geomspace(1e6, 1e9, 12)
    design = _power_design(n)
    log_y = np.log(2 + 60 * n**-0.3) + 0.01 * rng.standard_normal(12)
    theta = np.array([3.5, 0.25, 0.6])
    value, grad = _objective(theta, design, log_y, 1e-3)
    fd = optimize.approx_fprime(theta, lambda t: _objective(t, design, log_y, 1e-3)[0], 1e-7)
    assert value == pytest.approx(huber(log_predict(design, theta) - log_y, 1e-3).sum())
    np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=1e-9)


def test_fit_recovers_a_law_from_its_grid_and_bootstraps():
    n = np.repeat(np.geomspace(1e6, 1e9, 8), 3)
    y = 2.0 + 60.0 * n**-0.3
    grid = [(a, al, e) for a in (0.0, 5.0) for al in (0.0, 0.5) for e in (-1.0, 0.0, 1.0)]
    fit = fit_log_huber(_power_design(n), np.log(y), grid, 1e-3, refine=4, n_boot=5)
    np.testing.assert_allclose(fit.theta, [np.log(60), 0.3, np.log(2)], rtol=1e-4)
    assert fit.loss < 1e-12 and fit.boot.shape == (5, 3)
    np.testing.assert_allclose(fit.boot[:, 1], 0.3, rtol=1e-3)  # noise-free: every draw
    assert fit_log_huber(_power_design(n), np.log(y), grid, 1e-3).boot.shape == (0, 3)


def test_the_bootstrap_is_the_same_on_several_processes():
    n = np.repeat(np.geomspace(1e6, 1e9, 8), 3)
    y = (2.0 + 60.0 * n**-0.3) * np.exp(0.01 * np.random.default_rng(0).standard_normal(24))
    grid = [(a, al, e) for a in (0.0, 5.0) for al in (0.0, 0.5) for e in (-1.0, 0.0, 1.0)]
    one, two = (
        fit_log_huber(_power_design(n), np.log(y), grid, 1e-3, refine=4, n_boot=6, jobs=jobs)
        for jobs in (1, 2)
    )
    np.testing.assert_array_equal(two.boot, one.boot)


def test_no_finite_start_is_an_error():
    n = np.geomspace(1e6, 1e9, 4)
    with pytest.raises(CodemixError, match="no start"):
        fit_log_huber(_power_design(n), np.full(4, np.nan), [(0.0, 0.0, 0.0)], 1e-3)
