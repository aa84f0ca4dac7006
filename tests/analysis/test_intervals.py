"""Interval bounds, split-conformal scaling, widening and coverage counts."""

from __future__ import annotations

import numpy as np
import pytest

from codemix.analysis.intervals import central, coverage, interval_scale, widen


def test_interval_scale_is_the_conformal_quantile_of_the_ratios():
    y = np.arange(1.0, 11.0)  # |y - 0| / 1 = 1..10
    zero, one = np.zeros(10), np.ones(10)
    # ceil(11 * 0.8) / 10 = 0.9 -> the 9th ratio
    assert interval_scale(y, zero, -one, one, 0.8) == 9.0
    # asymmetric intervals: each side scales its own half-width
    assert interval_scale(-y, zero, -2 * one, one, 0.8) == 4.5


def test_widen_scales_each_half_width():
    mean, lo, hi = widen(np.array([1.0]), np.array([0.5]), np.array([2.0]), 2.0)
    assert (mean[0], lo[0], hi[0]) == (1.0, 0.0, 3.0)


def test_central_bounds_hold_the_level_share():
    draws = np.arange(101.0)[None, :].repeat(2, 0)
    lo, hi = central(draws, 0.9)
    np.testing.assert_allclose(lo, 5.0)
    np.testing.assert_allclose(hi, 95.0)
    lo0, _ = central(draws.T, 0.5, axis=0)
    np.testing.assert_allclose(lo0, 25.0)


def test_coverage_counts_observed_runs_inside():
    y = np.array([1.0, 2.0, 3.0, np.nan, 10.0])
    mean = np.array([1.0, 2.5, 3.0, 4.0, 5.0])
    c = coverage(y, mean, mean - 0.6, mean + 0.6)
    assert (c.inside, c.n) == (3, 4)  # the unobserved run counts nowhere
    assert c.share == 0.75 and c.mean_abs_error == pytest.approx((0 + 0.5 + 0 + 5) / 4)
    empty = coverage(np.array([np.nan]), np.zeros(1), np.zeros(1), np.zeros(1))
    assert (empty.inside, empty.n) == (0, 0) and np.isnan(empty.share)
