"""Interval bounds, split-conformal scaling, widening and coverage counts."""

from __future__ import annotations

import numpy as np
import pytest

from codemix.analysis.intervals import (
    NOISE_DRAWS,
    central,
    coverage,
    interval_scale,
    log_predictive,
    predictive_band,
    widen,
)


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


def test_predictive_band_repeats_few_bootstrap_draws_under_fresh_noise():
    resid = np.random.default_rng(1).normal(0.0, 0.02, 400)
    draws = np.ones((3, 20))  # 20 bootstrap draws that agree: the band is the noise's
    logs = log_predictive(draws, resid)
    assert logs.shape == (3, NOISE_DRAWS)
    want = np.quantile(resid, [0.05, 0.95])
    lo, hi = predictive_band(draws, resid, 0.9)
    np.testing.assert_allclose(np.log(lo), want[0], atol=0.004)
    np.testing.assert_allclose(np.log(hi), want[1], atol=0.004)
    # one noise draw a bootstrap draw, as before: its band turns on which residuals came
    one = np.log(draws) + np.random.default_rng(0).choice(resid, size=draws.shape)
    assert np.max(np.abs(np.quantile(one, 0.95, axis=1) - want[1])) > 0.004


def test_predictive_band_widens_rows_by_their_own_spread_and_goes_by_blocks():
    resid = np.random.default_rng(1).normal(0.0, 0.01, 200)
    draws = np.full((5, 400), 2.0)
    sd = np.array([0.0, 0.0, 0.1, 0.0, 0.1])
    lo, hi = predictive_band(draws, resid, 0.9, sd)
    assert log_predictive(draws, resid).shape == (5, 1200)  # 400 draws, each repeated 3 times
    width = np.log(hi / lo)
    assert width[[2, 4]].min() > 5 * width[[0, 1, 3]].max()
    blocks = predictive_band(draws, resid, 0.9, sd, rows=2)
    np.testing.assert_allclose(np.log(blocks[1] / blocks[0]), width, rtol=0.1)


@pytest.mark.parametrize("form", ["joint", "data"])
def test_both_size_laws_draw_their_intervals_through_the_band(form):
    """20 bootstrap draws that agree: a law's interval at a fitted size is its residuals'
    own 5-95 % range, as `predictive_band` gives it, not the quantiles of 20 residuals."""
    import dataclasses

    from codemix.analysis import _synthetic
    from codemix.analysis.datalaw import fit_data_law
    from codemix.analysis.scaling import ScalingConfig, fit_joint_law

    w, n, y, rd = _synthetic.ladder()
    if form == "joint":
        law = fit_joint_law(w, n, y, rd.domains, ScalingConfig(n_boot=0))
    else:
        law = fit_data_law(w, n, y, rd, rd.domains, (1.0,), n_boot=0)
    resid = np.random.default_rng(1).normal(0.0, 0.02, 400)
    law = dataclasses.replace(law, boot=np.tile(law.theta, (20, 1)), resid_log=resid)
    mean, lo, hi = law.interval(w[:3], n[:3], data=rd.take(np.arange(3)))
    want = np.quantile(resid, [0.05, 0.95])
    np.testing.assert_allclose(np.log(lo / mean), want[0], atol=0.004)
    np.testing.assert_allclose(np.log(hi / mean), want[1], atol=0.004)
