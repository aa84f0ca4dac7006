"""The results table of a study, from trials as the runner stores them."""

import optuna
import polars as pl
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from codemix.core.errors import CodemixError
from codemix.optimizer.export import export, rows
from codemix.optimizer.trials import (
    INTERRUPTED_ATTR,
    OVERRIDES_ATTR,
    RESULT_ATTR,
    RETRY_OF_ATTR,
    SURPLUS_ATTR,
)
from tests.core.test_results import SUMMARY

DISTS = {
    "groups.code.web": FloatDistribution(1e-6, 1.0),
    "groups.code.hq": FloatDistribution(1e-6, 1.0),
    "stages.init.code_frac": CategoricalDistribution(["none", "half"]),
}
PARAMS = {"groups.code.web": 0.6, "groups.code.hq": 0.2, "stages.init.code_frac": "half"}
OVERRIDES = ["groups.code.web=0.75", "groups.code.hq=0.25", "stages.init.code_frac=0.5"]


def _trial(state=TrialState.COMPLETE, sizes=("test", "1M"), **attrs):
    return create_trial(
        state=state,
        value=1.5 if state == TrialState.COMPLETE else None,
        params=PARAMS,
        distributions=DISTS,
        user_attrs={OVERRIDES_ATTR: OVERRIDES, **{RESULT_ATTR + s: SUMMARY for s in sizes}} | attrs,
    )


def _study():
    study = optuna.create_study()
    study.add_trial(_trial())
    study.add_trial(_trial(TrialState.FAIL, sizes=("test",), **{INTERRUPTED_ATTR: "SIGTERM"}))
    study.add_trial(_trial(**{RETRY_OF_ATTR: 1}))
    study.add_trial(_trial(TrialState.FAIL, sizes=(), **{SURPLUS_ATTR: True}))
    return study


def test_one_row_per_trial_and_size_with_what_was_trained():
    table = pl.DataFrame(rows(_study()))
    assert table.height == 2 + 1 + 2  # surplus trials are never shown
    first = table.row(0, named=True)
    # a simplex as the shares trained, not Optuna's draws; a choice by value and by name
    assert first["param.groups.code.web"] == 0.75 and first["param.groups.code.hq"] == 0.25
    assert first["param.stages.init.code_frac"] == 0.5
    assert first["choice.stages.init.code_frac"] == "half"
    assert first["objective.0"] == 1.5 and first["bpb.text"] == 1.5
    interrupted = table.filter(pl.col("trial") == 1).row(0, named=True)
    assert interrupted["state"] == "fail" and "interrupted by SIGTERM" in interrupted["reason"]
    assert table.filter(pl.col("trial") == 2)["retry_of"].to_list() == [1, 1]


def test_export_writes_csv_or_parquet_and_refuses_others(tmp_path):
    study = _study()
    assert export(study, tmp_path / "r.parquet") == 5
    assert pl.read_parquet(tmp_path / "r.parquet")["mix.init.code"].to_list() == [0.25] * 5
    with pytest.raises(CodemixError, match="write .csv or .parquet"):
        export(study, tmp_path / "r.json")
    with pytest.raises(CodemixError, match="has no trial results"):
        export(optuna.create_study(), tmp_path / "e.csv")
