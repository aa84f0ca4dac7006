"""Confirmation studies: the study written from a fit's schedules, and its calibration."""

import numpy as np
import polars as pl
import pytest

from codemix.analysis.confirm import KEY, calibration, parse_baseline, spec_objectives, study_raw
from codemix.analysis.optimum import parse_objective
from codemix.core.errors import CodemixError


def _table(names, y, mean, half=0.1):
    mean = np.asarray(mean, float)
    return pl.DataFrame(
        {
            f"choice.{KEY}": names,
            "bpb.text": y,
            "predicted_bpb.text": mean,
            "predicted_bpb.text_lo90": mean - half,
            "predicted_bpb.text_hi90": mean + half,
        }
    )


def test_one_seed_a_schedule_scores_run_by_run():
    t = _table(["optimum", "a", "b"], [1.0, 1.1, 1.3], [1.05, 1.1, 1.2], half=0.06)
    c = calibration(t, ["bpb.text"])["bpb.text"]
    assert c["runs"] == c["schedules"] == 3 and c["seeds"] == 1
    assert c["inside"] == 2  # b is 0.1 off, outside +-0.06
    err = np.mean([0.05 / 1.0, 0.0, 0.1 / 1.3])
    assert c["mean_relative_error"] == pytest.approx(err)
    assert c["mean_relative_error_of_means"] == pytest.approx(err)
    assert c["spearman"] == pytest.approx(1.0) and c["regret"] == 0.0
    assert "seed_spread_mean" not in c and "regret_se" not in c


def test_seeds_are_averaged_per_schedule_and_their_spread_reported():
    names = ["optimum", "optimum", "a", "a", "b", "b"]
    y = [1.02, 0.98, 0.96, 0.94, 1.3, 1.1]  # a beats the optimum by 0.05
    t = _table(names, y, [1.0, 1.0, 1.0, 1.0, 1.2, 1.2])
    c = calibration(t, ["bpb.text"])["bpb.text"]
    assert (c["runs"], c["schedules"], c["seeds"]) == (6, 3, 2)
    # run by run b's seeds are 0.1 / 1.3 and 0.1 / 1.1 off; their mean is exact
    assert c["mean_relative_error_of_means"] == pytest.approx((0.0 + 0.05 / 0.95 + 0.0) / 3)
    assert c["mean_relative_error"] > c["mean_relative_error_of_means"]
    assert c["regret"] == pytest.approx(0.05)
    se = np.sqrt(np.var([1.02, 0.98], ddof=1) / 2 + np.var([0.96, 0.94], ddof=1) / 2)
    assert c["regret_se"] == pytest.approx(se)
    assert c["seed_spread_max"] == pytest.approx(0.2 / 1.2)
    assert c["seed_spread_mean"] == pytest.approx((0.04 / 1.0 + 0.02 / 0.95 + 0.2 / 1.2) / 3)


def test_regret_of_a_maximised_metric_counts_from_the_highest():
    t = _table(["optimum", "a", "b"], [0.5, 0.7, 0.6], [0.6, 0.6, 0.6])
    c = calibration(t, ["bpb.text"], maximize=("bpb.text",))["bpb.text"]
    assert c["regret"] == pytest.approx(0.2)


def test_study_raw_trains_the_schedules_at_one_size_with_the_seeds_asked():
    raw = {
        "study": {"name": "ladder", "sizes": ["1M", "2M"], "seeds": 3, "promotion": "halving"},
        "search": {"stages.init.code_frac": {"low": 0, "high": 1}},
    }
    named = {"optimum": {"stages.init.code_frac": 0.2}, "text-only": {"stages.init.code_frac": 0}}
    out = study_raw(raw, named, "4M", "ladder-confirm-4M", "runs/c", seeds=2)
    assert out["study"]["sizes"] == ["4M"] and out["study"]["seeds"] == 2
    assert out["study"]["n_trials"] == 2 and "promotion" not in out["study"]
    assert out["search"] == {KEY: {"schedules": named}}
    assert "seeds" not in study_raw(raw, named, "4M", "c", "runs/c")["study"]
    assert raw["study"]["seeds"] == 3  # the ladder's spec is left as it was


def test_parse_baseline_names_what_is_wrong():
    stages = {"init": {}, "cooldown": {}}
    name, settings = parse_baseline("paper=init.code_frac=0.25,cooldown.code_frac=0.1", stages)
    assert name == "paper"
    assert settings == {"stages.init.code_frac": 0.25, "stages.cooldown.code_frac": 0.1}
    with pytest.raises(CodemixError, match="NAME=STAGE.KEY=VALUE"):
        parse_baseline("paper", stages)
    with pytest.raises(CodemixError, match="for a stage of the spec"):
        parse_baseline("x=warmup.code_frac=0.1", stages)
    with pytest.raises(CodemixError, match="is not a number"):
        parse_baseline("x=init.code_frac=lots", stages)
    with pytest.raises(CodemixError, match="'init.code_frac' is given twice"):
        parse_baseline("x=init.code_frac=0.1,init.code_frac=0.2", stages)


def test_a_baseline_of_code_shares_gets_its_mixture_row_before_training():
    from types import SimpleNamespace

    from codemix.analysis.confirm import _settings_row

    groups = [["mix.init.text", "mix.init.code"], ["mix.cool.code", "mix.cool.text"]]
    fit = SimpleNamespace(code_domains=["code"], mixture_groups=groups)
    stages = {"init": {"code_frac": 0.5}, "cool": {"code_frac": 0.1}}
    row = _settings_row(fit, {"stages.init.code_frac": 0.25}, stages)
    np.testing.assert_allclose(row, [0.75, 0.25, 0.1, 0.9])  # cool: the spec's own share
    mixed = {"stages.cool.mixture.code": 1, "stages.cool.mixture.text": 3}
    np.testing.assert_allclose(_settings_row(fit, mixed, stages), [0.5, 0.5, 0.25, 0.75])
    # two code domains: how a code share splits between them is the store's, not known here
    three = SimpleNamespace(
        code_domains=["py", "go"], mixture_groups=[["mix.init.py", "mix.init.go", "mix.init.text"]]
    )
    assert _settings_row(three, {"stages.init.code_frac": 0.3}, stages) is None
    assert _settings_row(fit, {}, {"init": {"mixture": {}}, "cool": {}}) is None


@pytest.mark.parametrize(
    ("text", "objectives"),
    [
        ("min:bpb.code", [{"metric": "bpb.code", "direction": "minimize"}]),
        ("max:bpb.text,bpb.code<=3", [{"metric": "bpb.text", "direction": "maximize"}]),
        (
            "weighted:bpb.text=0.7,bpb.code=0.3",
            [
                {"metric": "bpb.text", "direction": "minimize", "weight": 0.7},
                {"metric": "bpb.code", "direction": "minimize", "weight": 0.3},
            ],
        ),
    ],
)
def test_spec_objectives_are_what_the_optimum_optimised(text, objectives):
    assert spec_objectives(parse_objective(text, ["bpb.text", "bpb.code"])) == objectives
