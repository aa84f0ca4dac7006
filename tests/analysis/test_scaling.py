"""Scaling curves recover the parameters of the law that generated the data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from codemix.analysis.scaling import (
    JointLawFit,
    ScalingConfig,
    alpha_warning,
    choose_joint_law,
    exponent_warnings,
    fit_chinchilla,
    fit_joint_law,
    fit_power_law,
)
from codemix.core.errors import CodemixError

FAST = ScalingConfig(n_boot=20, refine_starts=10)
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _chinchilla_runs(seed=0, noise=0.01):
    rng = np.random.default_rng(seed)
    n = np.repeat(np.geomspace(5e7, 1e10, 12), 10)
    d = n * np.tile(np.geomspace(2, 200, 10), 12)
    true = {"E": 1.7, "A": 400.0, "B": 1500.0, "alpha": 0.34, "beta": 0.30}
    loss = true["E"] + true["A"] / n ** true["alpha"] + true["B"] / d ** true["beta"]
    return n, d, loss * np.exp(noise * rng.standard_normal(len(n))), true


def test_chinchilla_recovers_known_law_within_bootstrap_error():
    n, d, loss, true = _chinchilla_runs()
    fit = fit_chinchilla(n, d, loss, FAST)
    se = fit.se
    for k, v in true.items():
        assert se[k] > 0
        assert abs(fit.params[k] - v) < 4 * se[k] + 0.02 * v, (k, fit.params[k], v, se[k])
    assert se["alpha"] < 0.1 and se["E"] < 0.3  # informative, not just wide
    mean, lo, hi = fit.predict_interval(4.7e8, 20 * 4.7e8)
    assert lo < mean < hi


def test_chinchilla_noise_free_is_exact():
    n, d, loss, true = _chinchilla_runs(noise=0.0)
    fit = fit_chinchilla(n, d, loss, ScalingConfig(n_boot=0, refine_starts=10))
    for k, v in true.items():
        assert fit.params[k] == pytest.approx(v, rel=2e-3)


def test_power_law_recovers_known_law():
    rng = np.random.default_rng(1)
    n = np.repeat(np.geomspace(1e6, 1.24e8, 8), 4)
    loss = (2.0 + 60.0 * n**-0.3) * np.exp(0.005 * rng.standard_normal(len(n)))
    fit = fit_power_law(n, loss, FAST)
    assert fit.params["E"] == pytest.approx(2.0, abs=0.15)
    assert fit.params["alpha"] == pytest.approx(0.3, abs=0.05)
    m, lo, hi = fit.predict_interval(2.8e9)
    assert lo <= m <= hi and m == pytest.approx(2.0 + 60.0 * 2.8e9**-0.3, rel=0.03)


def test_scaling_fits_do_not_turn_on_the_order_of_the_rows():
    n, d, loss, _ = _chinchilla_runs()
    flip = np.random.default_rng(3).permutation(len(n))
    cfg = ScalingConfig(n_boot=6, refine_starts=5)
    a, b = fit_chinchilla(n, d, loss, cfg), fit_chinchilla(n[flip], d[flip], loss[flip], cfg)
    assert a.params == b.params
    np.testing.assert_array_equal(a.boot, b.boot)
    a, b = fit_power_law(n, loss, cfg), fit_power_law(n[flip], loss[flip], cfg)
    assert a.params == b.params
    np.testing.assert_array_equal(a.boot, b.boot)


def test_bad_inputs():
    with pytest.raises(CodemixError, match="> 0"):
        fit_chinchilla([1, 2, -3, 4, 5, 6], [1] * 6, [1] * 6)
    with pytest.raises(CodemixError, match="3 or more sizes"):
        fit_power_law([1e6, 1e6, 2e6], [3.0, 3.1, 2.9])
    with pytest.raises(CodemixError, match="delta"):
        ScalingConfig(delta=0)


@pytest.mark.skipif(not (DATA / "chinchilla").is_dir(), reason="shared reference data absent")
def test_besiroglu_estimates_on_their_data():
    from codemix.analysis.tables import read_table

    df = read_table(DATA / "chinchilla" / "svg_extracted_data.csv").sort("loss").head(240)
    n = df["Model Size"].to_numpy()
    d = df["Training FLOP"].to_numpy() / (6 * n)
    fit = fit_chinchilla(n, d, df["loss"].to_numpy(), ScalingConfig(n_boot=0, refine_starts=50))
    published = {"E": 1.817, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}
    se = {"E": 0.03, "A": 124.58, "B": 1293.23, "alpha": 0.02, "beta": 0.02}
    for k, v in published.items():
        assert abs(fit.params[k] - v) < se[k], k


def _ladder(law, sizes=(1e6, 4e6, 1.6e7, 6.4e7), per_size=20, seed=4):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0, 1, per_size * len(sizes))
    w = np.c_[1 - a, a]
    n = np.repeat(np.asarray(sizes, float), per_size)
    return w, n, law(a, n) * np.exp(0.003 * rng.standard_normal(len(n)))


def test_joint_law_picks_quadratic_exponents_for_an_inner_optimum():
    # the asymptote is lowest at a quarter code, as in a 25 %-code finding
    def law(a, n):
        return np.exp(0.6 + 0.8 * (a - 0.25) ** 2) + np.exp(4.0 + 0.3 * a) * n**-0.3

    w, n, y = _ladder(law)
    fit = choose_joint_law(w, n, y, ("text", "code"), FAST)
    assert fit.terms == "quadratic" and fit.selection["chosen"] == "quadratic"
    scores = fit.selection["scores"]
    assert scores["quadratic"]["rmse_log"] < scores["linear"]["rmse_log"]
    assert "scored at" in fit.selection["held_out"]  # 4 sizes: the largest is held out
    grid = np.linspace(0, 1, 101)
    pred = fit.predict(np.c_[1 - grid, grid], 2.8e9)
    assert abs(grid[np.argmin(pred)] - 0.25) < 0.08
    np.testing.assert_allclose(pred, law(grid, 2.8e9), rtol=0.02)
    back = JointLawFit.from_dict(fit.to_dict())
    assert back.terms == "quadratic"
    np.testing.assert_allclose(back.interval(w[:5], 2.8e9), fit.interval(w[:5], 2.8e9))


def test_joint_law_alpha_bounded_as_the_data_laws():
    """A size term spent by the second rung: unbounded, alpha runs off (to 7.9 here); bounded
    as in the data-constrained law, of which this law is the special case."""
    from codemix.analysis._lawterms import BOUNDS

    def law(a, n):
        return np.exp(0.6 + 0.3 * a) + 50.0 * (n / 1e6) ** -10.0

    w, n, y = _ladder(law)
    fit = fit_joint_law(w, n, y, ("text", "code"), FAST)
    assert fit.alpha == pytest.approx(BOUNDS["alpha"][1])
    assert (fit.boot[:, -1] <= BOUNDS["alpha"][1]).all()
    # one size for all rows, or one a row, as the data-constrained law takes them
    both = fit.predict(w[:2], np.array([1e6, 4e6]))
    one = [fit.predict(w[[i]], v)[0] for i, v in enumerate((1e6, 4e6))]
    np.testing.assert_allclose(both, one)


def test_joint_law_with_stage_groups():
    rng = np.random.default_rng(6)
    sizes = (1e6, 4e6, 1.6e7)
    a, c = rng.uniform(0, 1, 60), rng.uniform(0, 1, 60)
    w = np.c_[1 - a, a, 1 - c, c]
    n = np.repeat(np.asarray(sizes), 20)
    y = np.exp(0.6 + 0.3 * a - 0.2 * c) + np.exp(4.0 + 0.2 * a) * n**-0.3
    fit = fit_joint_law(w, n, y, ("t", "c", "ct", "cc"), FAST, groups=(2, 2))
    assert fit.groups == (2, 2) and fit.theta[-1] == pytest.approx(0.3, abs=0.02)
    new = np.array([[0.5, 0.5, 0.2, 0.8]])
    truth = np.exp(0.6 + 0.15 - 0.16) + np.exp(4.1) * 1e9**-0.3
    assert fit.predict(new, 1e9)[0] == pytest.approx(truth, rel=0.01)
    with pytest.raises(CodemixError, match="groups"):
        fit_joint_law(w, n, y, ("t", "c", "ct", "cc"), FAST, groups=(1, 3))


def test_extrapolation_intervals_widen_when_the_largest_size_is_missed():
    # the law's exponent drifts with size, which E + A N^-alpha cannot follow
    def law(a, n):
        return 1.5 + 0.3 * a + 40.0 * n ** -(0.25 + 0.03 * np.log10(n / 1e6))

    w, n, y = _ladder(law, sizes=(1e6, 3e6, 1e7, 3e7, 1e8), per_size=12, seed=5)
    fit = choose_joint_law(w, n, y, ("text", "code"), FAST)
    sel = fit.selection
    assert sel["held_out_coverage"] < 0.9 and fit.interval_scale > 1.0
    assert sel["interval_scale"] == fit.interval_scale
    raw = JointLawFit.from_dict(fit.to_dict() | {"interval_scale": 1.0})
    grid = np.linspace(0, 1, 21)
    wt = np.c_[1 - grid, grid]
    truth = law(grid, 4e8)
    _, lo, hi = fit.interval(wt, 4e8)
    _, lo_raw, hi_raw = raw.interval(wt, 4e8)
    assert np.all(hi - lo > hi_raw - lo_raw)
    assert np.mean((truth >= lo) & (truth <= hi)) > np.mean((truth >= lo_raw) & (truth <= hi_raw))


def test_alpha_far_from_published_laws_is_flagged():
    assert alpha_warning(0.3) == "" and alpha_warning(0.05) == alpha_warning(1.5) == ""
    for alpha in (0.01, 2.0, -0.1):
        assert alpha_warning(alpha).startswith("alpha is far from the 0.05-1.5 of published")


def test_a_data_exponent_far_from_published_laws_is_flagged_beside_alpha():
    from types import SimpleNamespace

    assert exponent_warnings(SimpleNamespace(alpha=0.3, beta=0.28)) == []
    assert exponent_warnings(SimpleNamespace(alpha=0.3)) == []  # a law without a data term
    (why,) = exponent_warnings(SimpleNamespace(alpha=0.3, beta=1.73))
    assert why.startswith("beta 1.73, the data exponent, is far from the 0.05-1.5 of published")
    assert len(exponent_warnings(SimpleNamespace(alpha=3.0, beta=1.73))) == 2


def test_extrapolation_intervals_are_never_narrowed():
    def law(a, n):
        return np.exp(0.6 + 0.3 * a) + np.exp(4.0) * n**-0.3

    w, n, y = _ladder(law)
    fit = choose_joint_law(w, n, y, ("text", "code"), FAST)
    assert fit.interval_scale >= 1.0 and "held_out_coverage" in fit.selection
    three = choose_joint_law(w[n < 6.4e7], n[n < 6.4e7], y[n < 6.4e7], ("t", "c"), FAST)
    assert three.interval_scale == 1.0 and "held_out_coverage" not in three.selection
