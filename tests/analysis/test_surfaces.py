"""Response surfaces: known laws are recovered and CV picks the family that made the data."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from codemix.analysis import _families
from codemix.analysis._families import make_family
from codemix.analysis.surfaces import (
    Surface,
    SurfaceConfig,
    cross_validate,
    fit_surface,
    implausible,
    quiet_numerics,
)
from codemix.core.errors import CodemixError

COLS = ("text", "code", "math")


def _mixtures(n, seed):
    return np.random.default_rng(seed).dirichlet([1.0, 1.0, 1.0], n)


def _exp_law(w):  # Data Mixing Laws form
    return 2.0 + np.exp(w @ np.array([1.2, -0.8, 0.3]))


def _quad_law(w):  # Scheffe quadratic with a strong text x code synergy
    return w @ np.array([3.0, 2.5, 3.2]) - 6.0 * w[:, 0] * w[:, 1] + 1.0 * w[:, 1] * w[:, 2]


def _noisy(f, n, seed, sd=0.02):
    w = _mixtures(n, seed)
    return w, f(w) + sd * np.random.default_rng(seed + 100).standard_normal(n)


def test_linear_scheffe_matches_statsmodels_intervals():
    import statsmodels.api as sm

    w, y = _noisy(lambda w: w @ np.array([3.0, 2.0, 4.0]), 60, 0, sd=0.05)
    m = make_family("linear").fit(w, y)
    np.testing.assert_allclose(m.params, [3.0, 2.0, 4.0], atol=0.1)
    new = _mixtures(5, 9)
    mean, lo, hi = m.interval(new, 0.9)
    frame = sm.OLS(y, w).fit().get_prediction(new).summary_frame(alpha=0.1)
    np.testing.assert_allclose(mean, frame["mean"])
    np.testing.assert_allclose(lo, frame["obs_ci_lower"])
    np.testing.assert_allclose(hi, frame["obs_ci_upper"])


def test_exp_family_recovers_data_mixing_law():
    w, y = _noisy(_exp_law, 120, 1, sd=0.01)
    m = make_family("exp").fit(w, y)
    assert m.sign == 1.0
    assert m.params[0] == pytest.approx(2.0, abs=0.1)
    np.testing.assert_allclose(m.params[1:], [1.2, -0.8, 0.3], atol=0.1)


def test_exp_family_is_robust_to_an_outlier():
    w, y = _noisy(_exp_law, 120, 2, sd=0.01)
    y[5] += 3.0
    m = make_family("exp").fit(w, y)
    np.testing.assert_allclose(m.params[1:], [1.2, -0.8, 0.3], atol=0.1)


@pytest.mark.parametrize(("law", "truth"), [(_exp_law, "exp"), (_quad_law, "quadratic")])
def test_cv_picks_the_true_family(law, truth):
    w, y = _noisy(law, 150, 3)
    cfg = SurfaceConfig(families=("linear", "quadratic", "exp"), stack=False)
    s = fit_surface(w, y, "loss", COLS, cfg)
    assert s.family == truth, [(c.family, c.rmse) for c in s.cv]
    assert s.cv_score.rmse < 0.03  # about the noise sd, 0.02


def test_cv_picks_flexible_model_for_a_bumpy_surface():
    law = lambda w: 3.0 + 0.3 * np.sin(8 * w[:, 0]) * np.cos(6 * w[:, 1])  # noqa: E731
    w, y = _noisy(law, 100, 4)
    s = fit_surface(
        w, y, "loss", COLS, SurfaceConfig(families=("linear", "quadratic", "gp"), stack=False)
    )
    assert s.family == "gp"
    others = [c.rmse for c in s.cv if c.family != "gp"]
    assert s.cv_score.rmse < 0.6 * min(others)


def test_intervals_cover_about_their_level():
    w, y = _noisy(_exp_law, 120, 5, sd=0.05)
    wt, yt = _noisy(_exp_law, 400, 6, sd=0.05)
    for fam in ("quadratic", "exp", "gp"):
        _, lo, hi = make_family(fam).fit(w, y).interval(wt, 0.9)
        cover = np.mean((yt >= lo) & (yt <= hi))
        assert 0.8 < cover < 0.97, (fam, cover)


def test_stack_scores_and_round_trips():
    w, y = _noisy(_exp_law, 100, 7)
    cfg = SurfaceConfig(families=("linear", "exp", "gp"), folds=4)
    s = fit_surface(w, y, "loss", COLS, cfg, keep_all=True)
    assert {c.family for c in s.cv} == {"linear", "exp", "gp", "stack"}
    assert all(np.isfinite(c.rmse) for c in s.cv)
    new = _mixtures(7, 8)
    for model in s.fitted.values():
        surf = Surface("loss", COLS, model.name, model)
        back = Surface.from_dict(surf.to_dict())
        for a, b in zip(surf.interval(new), back.interval(new), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-9)


def test_cross_validate_reports_failure_as_nan():
    w, y = _noisy(_exp_law, 12, 9)
    score, _ = cross_validate(w, y, "quadratic", folds=2)
    assert np.isnan(score.rmse) and score.error


def test_config_and_input_errors():
    with pytest.raises(CodemixError, match="unknown model family"):
        SurfaceConfig(families=("lightgbm",))
    with pytest.raises(
        CodemixError,
        match=r"too few .* needs 10\); train more trials, or give fewer folds \(--folds 3\)",
    ):
        fit_surface(_mixtures(6, 0), np.ones(6), "loss", COLS)
    w, y = _noisy(_exp_law, 40, 10)
    s = fit_surface(w, y, "loss", COLS, SurfaceConfig(families=("linear",), stack=False))
    with pytest.raises(CodemixError, match="takes 3 weights"):
        s.predict(np.ones((2, 2)) / 2)


def test_calibration_repairs_intervals_of_a_misspecified_family():
    # A linear Scheffe model of a curved law: its OLS intervals assume it is the true model.
    w, y = _noisy(_quad_law, 200, 11, sd=0.01)
    wt, yt = _noisy(_quad_law, 2000, 12, sd=0.01)
    raw = fit_surface(w, y, "loss", COLS, SurfaceConfig(families=("linear",), calibrate=False))
    cal = fit_surface(w, y, "loss", COLS, SurfaceConfig(families=("linear",)))
    assert raw.interval_scale == 1.0 and cal.interval_scale != 1.0
    _, lo, hi = cal.interval(wt)
    cover = np.mean((yt >= lo) & (yt <= hi))
    assert 0.85 < cover < 0.95, cover
    back = Surface.from_dict(cal.to_dict())
    assert back.interval_scale == cal.interval_scale


def _two_stage_law(w):  # init (text, code, math) and cooldown (text, code) mixtures
    return 2.0 + np.exp(w[:, :3] @ np.array([1.2, -0.8, 0.3]) - 0.6 * w[:, 4])


def test_two_stage_surface_recovers_the_law_and_round_trips():
    rng = np.random.default_rng(13)
    w = np.hstack([rng.dirichlet(np.ones(3), 120), rng.dirichlet(np.ones(2), 120)])
    y = _two_stage_law(w) + 0.02 * rng.standard_normal(120)
    cols = (*COLS, "cool_text", "cool_code")
    cfg = SurfaceConfig(families=("linear", "quadratic", "exp"), stack=False)
    s = fit_surface(w, y, "loss", cols, cfg, groups=(3, 2))
    assert s.family == "exp", [(c.family, c.rmse) for c in s.cv]
    assert s.groups == (3, 2) and s.cv_score.rmse < 0.03
    new = np.hstack([rng.dirichlet(np.ones(3), 50), rng.dirichlet(np.ones(2), 50)])
    np.testing.assert_allclose(s.predict(new), _two_stage_law(new), atol=0.03)
    back = Surface.from_dict(s.to_dict())
    assert back.groups == (3, 2)
    np.testing.assert_allclose(back.interval(new), s.interval(new), rtol=1e-9)
    # the cooldown's weights alone explain part of the metric: one static mixture cannot
    blind = fit_surface(w[:, :3], y, "loss", COLS, cfg)
    assert blind.cv_score.rmse > 3 * s.cv_score.rmse


def test_a_free_stage_variable_next_to_the_mixture():
    rng = np.random.default_rng(14)
    w = np.c_[rng.dirichlet(np.ones(3), 100), rng.uniform(0.05, 0.3, 100)]  # + cooldown share

    def law(w):
        return 2.0 + np.exp(w[:, :3] @ np.array([1.2, -0.8, 0.3]) - 2.0 * w[:, 3])

    y = law(w) + 0.02 * rng.standard_normal(100)
    cfg = SurfaceConfig(families=("linear", "exp", "gp"), stack=False)
    s = fit_surface(w, y, "loss", (*COLS, "cooldown_share"), cfg, groups=(3, 1))
    assert s.family == "exp" and s.cv_score.rmse < 0.03
    new = np.c_[rng.dirichlet(np.ones(3), 40), rng.uniform(0.05, 0.3, 40)]
    np.testing.assert_allclose(s.predict(new), law(new), atol=0.03)
    gp = next(c for c in s.cv if c.family == "gp")
    assert gp.rmse < 0.05  # the GP sees the share as it is, not its logarithm


def test_implausible_cv_errors():
    y = np.array([1.0, 1.06, 0.98, 1.02])  # sd 0.03
    assert implausible(1.497e21, y) == "implausible CV RMSE 1.5e+21 (metric sd 0.03)"
    assert implausible(float("nan"), y) and implausible(float("inf"), y)
    assert implausible(0.31, y) and not implausible(0.29, y)  # the line: 10 sd
    assert not implausible(0.05, np.ones(4))  # a constant metric has no scale to judge by


def test_a_family_with_an_absurd_cv_error_fails_and_is_left_out(monkeypatch):
    w, y = _noisy(_exp_law, 60, 15)
    real = _families._Quadratic.interval

    def blown_up(self, w, level):  # as the exponential family at a held-out run gone wild
        mean, lo, hi = real(self, w, level)
        return mean + 1e21, lo + 1e21, hi + 1e21

    monkeypatch.setattr(_families._Quadratic, "interval", blown_up)
    cfg = SurfaceConfig(families=("linear", "quadratic", "exp"))
    s = fit_surface(w, y, "loss", COLS, cfg, keep_all=True)
    quad = next(c for c in s.cv if c.family == "quadratic")
    assert np.isnan(quad.rmse) and quad.error.startswith("implausible CV RMSE 1e+21")
    assert s.family in ("exp", "stack")
    assert "quadratic" not in s.fitted
    assert [m.name for m in s.fitted["stack"].members] in (["linear", "exp"], ["exp"])
    with pytest.raises(CodemixError, match="quadratic: implausible CV RMSE"):
        fit_surface(w, y, "loss", COLS, SurfaceConfig(families=("quadratic",)))


def test_a_blown_up_exponential_is_not_chosen():
    # one run far out on a free stage variable: the exponential fitted with it in the
    # training folds explodes at a held-out run (as a real study's tokens-per-param did)
    rng = np.random.default_rng(2)
    w = np.c_[rng.dirichlet([1, 1], 20), rng.uniform(10, 100, 20)]
    y = 1.0 + 0.02 * rng.standard_normal(20)
    y[np.argmax(w[:, 2])] += 0.5
    cfg = SurfaceConfig(families=("linear", "exp", "exp_log"))
    s = fit_surface(w, y, "loss", ("text", "code", "tpp"), cfg, groups=(2, 1))
    exp = next(c for c in s.cv if c.family == "exp")
    assert "implausible CV RMSE" in exp.error and np.isnan(exp.rmse)
    assert s.family != "exp" and np.isfinite(s.cv_score.rmse)
    assert "exp" not in [m.name for m in getattr(s.model, "members", [])]


def test_quiet_numerics_silences_numeric_warnings_only():
    from scipy.optimize import OptimizeWarning
    from sklearn.exceptions import ConvergenceWarning as SkConvergence
    from statsmodels.tools.sm_exceptions import ConvergenceWarning, ValueWarning

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_numerics():
            np.exp(np.array([1000.0]))
            np.log(np.array([0.0, -1.0]))
            for kind in (RuntimeWarning, OptimizeWarning, ConvergenceWarning, ValueWarning):
                warnings.warn("numeric", kind, stacklevel=1)
            warnings.warn("numeric", SkConvergence, stacklevel=1)
            warnings.warn("Predicted variances smaller than 0. Set to 0.", stacklevel=1)
            warnings.warn("something else", UserWarning, stacklevel=1)
        np.exp(np.array([1000.0]))  # outside: as before
    assert [str(x.message) for x in seen] == ["something else", "overflow encountered in exp"]
    with pytest.raises(CodemixError, match="passes"), quiet_numerics():
        raise CodemixError("passes")
