"""Scaling curves recover the parameters of the law that generated the data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from analysis.scaling import ScalingConfig, fit_chinchilla, fit_power_law, huber
from codemix.errors import CodemixError

FAST = ScalingConfig(n_boot=20, refine_starts=10)
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def test_huber_is_quadratic_inside_linear_outside():
    r = np.array([0.0, 5e-4, -1e-3, 1e-2])
    np.testing.assert_allclose(huber(r, 1e-3), [0.0, 1.25e-7, 5e-7, 1e-3 * (1e-2 - 5e-4)])


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


def test_bad_inputs():
    with pytest.raises(CodemixError, match="> 0"):
        fit_chinchilla([1, 2, -3, 4, 5, 6], [1] * 6, [1] * 6)
    with pytest.raises(CodemixError, match="3 or more sizes"):
        fit_power_law([1e6, 1e6, 2e6], [3.0, 3.1, 2.9])
    with pytest.raises(CodemixError, match="delta"):
        ScalingConfig(delta=0)


@pytest.mark.skipif(not (DATA / "chinchilla").is_dir(), reason="shared reference data absent")
def test_besiroglu_estimates_on_their_data():
    from analysis.tables import read_table

    df = read_table(DATA / "chinchilla" / "svg_extracted_data.csv").sort("loss").head(240)
    n = df["Model Size"].to_numpy()
    d = df["Training FLOP"].to_numpy() / (6 * n)
    fit = fit_chinchilla(n, d, df["loss"].to_numpy(), ScalingConfig(n_boot=0, refine_starts=50))
    published = {"E": 1.817, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}
    se = {"E": 0.03, "A": 124.58, "B": 1293.23, "alpha": 0.02, "beta": 0.02}
    for k, v in published.items():
        assert abs(fit.params[k] - v) < se[k], k
