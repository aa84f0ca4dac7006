"""Result column names: one spelling, unambiguous prefixes."""

import pytest

from codemix.core import results
from codemix.core.errors import CodemixError

SUMMARY = {
    "status": "completed",
    "reason": None,
    "final": {"loss": {"text": 3.0, "code": 2.0}, "bpb": {"text": 1.5, "code": 1.0}, "step": 9},
    "realised_mixture": {"init": {"text": 0.75, "code": 0.25}, "init_late": {"text": 1.0}},
    "code_frac": {"init": 0.25, "init_late": 0.0},
    "code_domains": ["code"],
    "stage_tokens": {"init": 640, "init_late": 128},
    "epochs": {"text": 0.5, "code": 0.1},
    "model": {"vocab_size": 512},
    "params": 1000,
    "non_embedding_params": 800,
    "tokens": 768,
    "flops": 10**9,
    "wall_time_s": 1.0,
    "tokens_per_s": 700.0,
}


def test_run_columns_name_every_part_with_dots():
    row = results.run_columns(SUMMARY, "1M")
    assert row["bpb.text"] == 1.5 and row["loss.code"] == 2.0
    assert row["mix.init.code"] == 0.25 and row["mix.init_late.text"] == 1.0
    assert row["code_frac.init_late"] == 0.0 and row["tokens.init"] == 640
    assert row["epochs.code"] == 0.1 and row["vocab_size"] == 512
    assert row["code_domains"] == "code" and row["size"] == "1M"
    # `mix.init.*` cannot reach the stage `init_late`
    assert [c for c in row if c.startswith("mix.init.")] == ["mix.init.text", "mix.init.code"]
    assert not [c for c in row if c.startswith("unique_")]  # nothing capped, nothing said


def test_run_columns_say_where_the_wall_time_went():
    timing = {"setup_s": 1.5, "compile_s": 4.0, "steps_s": 20.0, "eval_s": 2.0}
    timing |= {"checkpoint_s": 0.5, "step_tokens_per_s": 700.0, "step_mfu": None}
    row = results.run_columns(SUMMARY | {"timing": timing}, "1M")
    assert row["time.compile_s"] == 4.0 and row["time.steps_s"] == 20.0
    assert [c for c in row if c.startswith("time.")] == [
        "time.setup_s",
        "time.compile_s",
        "time.steps_s",
        "time.eval_s",
        "time.checkpoint_s",
    ]  # the phases in order; the rate and MFU are not phases (`tokens_per_s` has the rate)
    assert not [c for c in results.run_columns(SUMMARY, "1M") if c.startswith("time.")]


def test_run_columns_name_the_domains_a_spec_capped():
    caps = {"unique_tokens": {"text": 2_000_000}, "unique_share": {"code": 0.02}}
    row = results.run_columns(SUMMARY | {"unique_caps": caps}, "1M")
    assert row["unique_tokens.text"] == 2_000_000 and row["unique_share.code"] == 0.02


@pytest.mark.parametrize("name", ["init", "init_late", "stage-2", "Cooldown"])
def test_good_names(name):
    assert results.check_name(name, "stage") == name


@pytest.mark.parametrize("name", ["init.late", "2nd", "", "a b", "café"])
def test_names_that_would_break_columns_or_keys_are_refused(name):
    with pytest.raises(CodemixError, match="letters, digits"):
        results.check_name(name, "stage")


def test_a_stage_name_with_a_dot_is_refused_in_a_spec():
    from codemix.proxy_train.schedule import Stage

    with pytest.raises(CodemixError, match="stage name 'cool.down'"):
        Stage("cool.down", {"text": 1.0}, tokens=100)
