"""Objectives, the optimum and the Pareto front."""

from __future__ import annotations

import numpy as np
import pytest

from codemix.analysis.fit import fit_results, predict
from codemix.analysis.fitfile import FitFile
from codemix.analysis.optimum import (
    edge_stages,
    find_optimum,
    outside_ranges,
    pareto_front,
    pareto_indices,
    parse_objective,
    weight_ranges,
)
from codemix.analysis.scaling import ScalingConfig
from codemix.analysis.surfaces import SurfaceConfig
from codemix.analysis.tables import ResultsTable
from codemix.core.errors import CodemixError
from tests.analysis.test_fit import _table


@pytest.fixture(scope="module")
def fit():
    return fit_results(
        _table(),
        SurfaceConfig(families=("linear", "exp"), stack=False),
        ScalingConfig(n_boot=12),
    )


def test_objectives():
    o = parse_objective("min:nl,code<=2.5", ["nl", "code"])
    assert o.weights == {"nl": 1.0} and o.constraints == (("code", "<=", 2.5),)
    assert parse_objective("max:nl", ["nl"]).weights == {"nl": -1.0}
    assert parse_objective("weighted:nl=0.7,code=0.3", ["nl", "code"]).weights == {
        "nl": 0.7,
        "code": 0.3,
    }
    for bad in ("best:nl", "min:", "min:acc", "weighted:nl", "min:nl,code<2"):
        with pytest.raises(CodemixError):
            parse_objective(bad, ["nl", "code"])


def test_objectives_keep_dotted_metric_names():
    metrics = ["bpb.text", "bpb.code"]
    o = parse_objective("min:bpb.text,bpb.code<=3.0", metrics)
    assert o.weights == {"bpb.text": 1.0} and o.constraints == (("bpb.code", "<=", 3.0),)
    o = parse_objective("weighted:bpb.text=0.7,bpb.code=0.3", metrics)
    assert o.weights == {"bpb.text": 0.7, "bpb.code": 0.3}
    o = parse_objective("max:bpb.code,bpb.text>=1.5e-1", metrics)
    assert o.weights == {"bpb.code": -1.0} and o.constraints == (("bpb.text", ">=", 0.15),)
    with pytest.raises(CodemixError, match="names metric 'bpb.txt'"):
        parse_objective("min:bpb.txt", metrics)


def test_optimum_finds_the_known_best_and_respects_constraints(fit):
    opt = find_optimum(fit, parse_objective("min:nl", ["nl", "code"]), 4.7e8, 800, 30)
    assert opt.mixture[0] > 0.95  # all text minimises NL loss under this law
    assert opt.argmax_lo[0] <= opt.mixture[0] + 1e-9 <= opt.argmax_hi[0] + 1e-9
    bound = 0.5 * (predict(fit, np.array([[1.0, 0.0]]), 4.7e8)["code"][0][0] + 1.4)
    cons = parse_objective(f"min:nl,code<={bound}", ["nl", "code"])
    opt2 = find_optimum(fit, cons, 4.7e8, 800, 30)
    assert opt2.predicted["code"][0] <= bound + 1e-9
    assert opt2.mixture[0] < opt.mixture[0]
    with pytest.raises(CodemixError, match="no mixture satisfies"):
        find_optimum(fit, parse_objective("min:nl,code<=0.1", ["nl", "code"]), 4.7e8, 200, 5)


def test_pareto_front_is_non_dominated(fit):
    w, a, b = pareto_front(fit, "nl", "code", 4.7e8, n_candidates=500)
    assert len(w) > 5
    assert np.all(np.diff(a) >= 0) and np.all(np.diff(b) < 0)


def test_pareto_indices():
    x = np.array([1.0, 2.0, 3.0, 1.5])
    y = np.array([3.0, 2.0, 1.0, 3.5])
    assert pareto_indices(x, y).tolist() == [0, 1, 2]
    # of points tied on x only the lowest y is on the front, whatever their order
    assert pareto_indices(np.array([1.0, 1.0, 2.0]), np.array([2.0, 1.0, 0.5])).tolist() == [1, 2]
    assert pareto_indices(np.array([]), np.array([])).tolist() == []


def test_optimum_at_training_size_uses_surface_draws(fit):
    opt = find_optimum(fit, parse_objective("weighted:nl=1,code=1", ["nl", "code"]), None, 400, 20)
    assert opt.size is None and opt.n_draws > 0
    assert np.isclose(opt.mixture.sum(), 1.0)


def _two_stage_table(per_size=16, seed=3) -> ResultsTable:
    """Init (text, code) and cooldown (text, code) mixtures; code in the cooldown lowers NL
    loss, and the runs tried cooldown code shares up to 0.6 only."""
    rng = np.random.default_rng(seed)
    sizes = (1e6, 4e6, 1.6e7, 6.4e7)
    init = rng.dirichlet([1, 1], per_size * len(sizes))
    cool_code = rng.uniform(0, 0.6, len(init))
    w = np.c_[init, 1 - cool_code, cool_code]
    n = np.repeat(np.asarray(sizes, float), per_size)
    x = w[:, [0, 1, 3]]  # Scheffe-linear terms: init text, init code, cooldown code
    nl = np.exp(x @ [0.5, 1.0, -0.3]) + np.exp(x @ [4.0, 4.6, -0.2]) * n**-0.3
    code = np.exp(x @ [1.0, 0.3, -0.1]) + np.exp(x @ [4.4, 3.8, 0.0]) * n**-0.3
    y = np.c_[nl, code] * np.exp(0.003 * rng.standard_normal((len(n), 2)))
    cols = ("init_text", "init_code", "cool_text", "cool_code")
    return ResultsTable("two-stage", cols, ("nl", "code"), w, y, "params", None, n, groups=(2, 2))


def test_two_stage_optimum_stays_within_the_runs_unless_asked():
    fit = fit_results(
        _two_stage_table(),
        SurfaceConfig(families=("linear", "exp"), stack=False),
        ScalingConfig(n_boot=12),
    )
    assert fit.groups == (2, 2) and fit.scaling["nl"].groups == (2, 2)
    w = np.array([[0.9, 0.1, 0.5, 0.5]])
    x = w[:, [0, 1, 3]]
    truth = np.exp(x @ [0.5, 1.0, -0.3]) + np.exp(x @ [4.0, 4.6, -0.2]) * 2.8e9**-0.3
    np.testing.assert_allclose(predict(fit, w, 2.8e9)["nl"][0], truth, rtol=0.02)
    obj = parse_objective("min:nl", ["nl", "code"])
    opt = find_optimum(fit, obj, 2.8e9, 800, 20)
    assert opt.mixture[0] > 0.9  # text in the init stage
    assert 0.5 < opt.mixture[3] <= fit.data["weights_max"][3] + 1e-9  # most code tried
    assert np.allclose([opt.mixture[:2].sum(), opt.mixture[2:].sum()], 1)
    wide = find_optimum(fit, obj, 2.8e9, 800, 20, within_data=False)
    assert wide.mixture[3] > 0.9  # the law, extrapolated, wants an all-code cooldown
    front, _, _ = pareto_front(fit, "nl", "code", 2.8e9, 500)
    assert np.all(front[:, 3] <= fit.data["weights_max"][3] + 1e-9)


def test_rows_outside_the_fitted_runs_weight_ranges():
    # a stage mixture (text, code) and a free stage variable, ranges as FIT.json keeps them
    data = {"weights_min": [0.2, 0.1, 10.0], "weights_max": [0.9, 0.8, 40.0]}
    fit = FitFile(("text", "code", "tpp"), {}, data=data, groups=(2, 1))
    lo, hi = weight_ranges(fit)
    np.testing.assert_allclose(hi, [0.9, 0.8, 40.0])
    w = np.array(
        [
            [0.5, 0.5, 20.0],
            [0.05, 0.95, 20.0],  # code above its range, text below
            [0.9000004, 0.0999996, 40.0],  # the ends, as rounded to 6 decimals
            [0.5, 0.5, 55.0],  # the free variable beyond its range
            [0.1, 0.9, 5.0],
        ]
    )
    out = outside_ranges(fit, w)
    assert out.rows.tolist() == [1, 3, 4]
    assert out.columns == (
        ("text", 0.05, "<", 0.2),
        ("code", 0.95, ">", 0.8),
        ("tpp", 55.0, ">", 40.0),
        ("tpp", 5.0, "<", 10.0),
    )
    assert outside_ranges(fit, w[[0, 2]]).rows.size == 0
    old = FitFile(("text", "code", "tpp"), {}, data={"n_runs": 40}, groups=(2, 1))
    assert weight_ranges(old) is None and outside_ranges(old, w) is None


def test_edge_stages_names_a_code_share_at_an_end_the_study_chose():
    cols = ("mix.init.text", "mix.init.code", "mix.cooldown.text", "mix.cooldown.code")
    # the ladder searched init 0-100 % code (ends no search can pass), cooldown 10-60 %
    ranges = {"weights_min": [0.0, 0.0, 0.4, 0.1], "weights_max": [1.0, 1.0, 0.9, 0.6]}
    f = FitFile(cols, {}, data=ranges, groups=(2, 2), code_domains=("code",))
    assert edge_stages(f, np.array([0.4, 0.6, 0.4, 0.6])) == ["cooldown"]
    assert edge_stages(f, np.array([0.1, 0.9, 0.9, 0.1])) == ["cooldown"]
    assert edge_stages(f, np.array([1.0, 0.0, 0.7, 0.3])) == []  # 0 % code in init: no edge
    assert edge_stages(FitFile(cols, {}, groups=(2, 2), code_domains=("code",)), np.ones(4)) == []
