"""Fitting a results table into a FIT.json, and prediction at a target size."""

from __future__ import annotations

import numpy as np
import pytest

from codemix.analysis.fit import fit_results, predict
from codemix.analysis.scaling import ScalingConfig
from codemix.analysis.surfaces import SurfaceConfig
from codemix.analysis.tables import ResultsTable
from codemix.core.errors import CodemixError

COLS = ("text", "code")


def _table(sizes=(1e6, 4e6, 1.6e7, 6.4e7), per_size=16, seed=0, **kw) -> ResultsTable:
    """NL loss falls with text share, code loss with code share; both fall with size."""
    rng = np.random.default_rng(seed)
    w = rng.dirichlet([1, 1], per_size * len(sizes))
    n = np.repeat(np.asarray(sizes, float), per_size)
    nl = np.exp(w @ [0.5, 1.0]) + np.exp(w @ [4.0, 4.6]) * n**-0.3
    code = np.exp(w @ [1.0, 0.3]) + np.exp(w @ [4.4, 3.8]) * n**-0.3
    y = np.c_[nl, code] * np.exp(0.003 * rng.standard_normal((len(n), 2)))
    return ResultsTable("synthetic", COLS, ("nl", "code"), w, y, "params", None, n, **kw)


@pytest.fixture(scope="module")
def fit():
    return fit_results(
        _table(),
        SurfaceConfig(families=("linear", "exp"), stack=False),
        ScalingConfig(n_boot=12),
    )


def test_prediction_at_target_size_matches_the_law(fit):
    w = np.array([[0.8, 0.2], [0.3, 0.7]])
    p = predict(fit, w, 2.8e9)
    truth = np.exp(w @ [0.5, 1.0]) + np.exp(w @ [4.0, 4.6]) * 2.8e9**-0.3
    mean, lo, hi = p["nl"]
    np.testing.assert_allclose(mean, truth, rtol=0.02)
    assert np.all(lo < mean) and np.all(mean < hi)
    # one size per row: each row as if predicted at its own size alone
    rows = predict(fit, w, np.array([2.8e9, 4.7e8]))
    at_small = predict(fit, w[1:], 4.7e8)
    for got, want in zip(rows["code"], at_small["code"], strict=True):
        assert got[1] == pytest.approx(want[0])
    assert rows["nl"][0][0] == pytest.approx(mean[0])
    two = fit_results(_table(sizes=(1e6, 4e6)), SurfaceConfig(families=("linear",), stack=False))
    assert two.scaling == {}
    with pytest.raises(CodemixError, match="no size law"):
        predict(two, w, 1e9)


def test_the_fit_records_what_its_sizes_count_and_the_code_domains():
    linear = SurfaceConfig(families=("linear",), stack=False)
    table = _table(sizes=(1e6, 4e6), vocab_size=4096, code_domains=("code",))
    fit = fit_results(table, linear)
    assert (fit.size_col, fit.vocab_size, fit.code_domains) == ("params", 4096, ("code",))
    assert fit_results(_table(sizes=(1e6, 4e6)), linear).code_domains is None
    # given code domains win over the table's, and must name a mixture column's domain
    assert fit_results(table, linear, code_domains=("text",)).code_domains == ("text",)
    with pytest.raises(CodemixError, match="code domain.s. hq_code match no mixture column"):
        fit_results(table, linear, code_domains=("hq_code",))
