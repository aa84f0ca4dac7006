import optuna
import pytest

from codemix.core.errors import CodemixError
from codemix.optimizer.space import check_objectives, load_study


def test_loads_and_suggests(write_study):
    search = (
        '"stages.init.code_frac" = { low = 0.0, high = 1.0 }\n'
        '"stages.cooldown.code_frac" = { choices = { none = 0.0, some = 0.2 } }\n'
        '"groups.code" = { simplex = ["code", "web"] }\n'
    )
    spec = load_study(
        write_study(
            search=search,
            extra="[groups]\ncode = { code = 0.5, web = 0.5 }\ntext = { text = 1.0 }\n",
        )
    )
    trial = optuna.trial.FixedTrial(
        {
            "stages.init.code_frac": 0.4,
            "stages.cooldown.code_frac": "some",
            "groups.code.code": 0.3,
            "groups.code.web": 0.1,
        }
    )
    overrides = spec.suggest(trial)
    assert "stages.init.code_frac=0.4" in overrides
    assert "stages.cooldown.code_frac=0.2" in overrides
    run = spec.run_spec(overrides)
    mix = run.schedule.stages[0].mixture
    assert mix["code"] == pytest.approx(0.4 * 0.75) and mix["web"] == pytest.approx(0.4 * 0.25)


def test_grid_of_the_code_share_sweep(write_study):
    spec = load_study(
        write_study(
            sampler="grid",
            n=None,
            search='"stages.init.code_frac" = { values = [0.0, 0.25, 0.5, 0.75, 0.9, 1.0] }',
        )
    )
    assert spec.grid() == {"stages.init.code_frac": [0.0, 0.25, 0.5, 0.75, 0.9, 1.0]}
    assert spec.n_trials == 6  # no n_trials: the whole grid, not the default 12 (nor fewer)
    two = '"stages.init.code_frac" = { values = [0.0, 0.5] }\n"train.lr_peak" = ' + (
        "{ values = [1e-3, 2e-3, 3e-3] }"
    )
    assert load_study(write_study(name="two", sampler="grid", n=None, search=two)).n_trials == 6
    assert load_study(write_study(name="n", sampler="grid", n=4, search=two)).n_trials == 4


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"search": ""}, "the search space is empty"),
        ({"sampler": "annealing"}, "sampler 'annealing'"),
        ({"sampler": "grid"}, "'grid' needs values or choices"),
        ({"search": '"stages.init.code_frac" = { low = 1.0, high = 0.0 }'}, "low < high"),
        ({"search": '"stages.init.code_frac" = 0.3'}, "expected a table"),
        ({"search": '"stages.init.code_frac" = { mean = 0.3 }'}, "give low/high"),
        # a key or a value no run accepts fails on loading, not in every trial
        (
            {"search": '"stages.warmup.code_frac" = { low = 0.0, high = 1.0 }'},
            r"\[search\] 'stages.warmup.code_frac' at 0: --set .*no stage 'warmup'",
        ),
        (
            {"search": '"stages.init.code_frac" = { low = 0.0, high = 1.5 }'},
            r"\[search\] 'stages.init.code_frac' at 1.5: stage 'init': code_frac = 1.5; expected",
        ),
        (
            {"search": '"train.lr_peek" = { values = [1e-3, 3e-3] }'},
            r"\[search\] 'train.lr_peek' at 0.001: unknown key \[train\].lr_peek",
        ),
        (
            {"search": '"stages.init.code_frac" = { choices = { some = 0.2, all = 2 } }'},
            r"\[search\] 'stages.init.code_frac' at 'all': stage 'init': code_frac = 2",
        ),
    ],
)
def test_bad_study_specs(write_study, kw, message):
    path = write_study(**kw)
    with pytest.raises(CodemixError, match=message):
        load_study(path)


def test_objective_no_run_reports(write_study):
    path = write_study()
    text = path.read_text().replace('metric = "bpb.text"', 'metric = "accuracy.text"')
    path.write_text(text)
    with pytest.raises(CodemixError, match="'accuracy.text': no run reports it"):
        load_study(path)
    path.write_text(text.replace("accuracy.text", "bpb.web"))
    spec = load_study(path)
    with pytest.raises(CodemixError, match="'bpb.web': no run reports it.*text, code"):
        check_objectives(spec, ("text", "code"))


def test_weighted_objectives(write_study):
    path = write_study()
    path.write_text(
        path.read_text().replace(
            'metric = "bpb.text"',
            'metric = "bpb.text"\nweight = 0.7\n[[objectives]]\nmetric = "bpb.code"\nweight = 0.3',
        )
    )
    spec = load_study(path)
    assert spec.directions == ["minimize"]
    assert spec.objective_value({"bpb": {"text": 1.0, "code": 2.0}}) == [pytest.approx(1.3)]


def test_named_schedules_set_several_keys_and_are_checked(write_study):
    search = (
        '"schedule" = { schedules = { low = { "stages.init.code_frac" = 0.1 }, '
        'high = { "stages.init.code_frac" = 0.6, "train.lr_peak" = 1e-3 } } }'
    )
    spec = load_study(write_study(sampler="grid", search=search))
    assert spec.grid() == {"schedule": ["low", "high"]}
    overrides = spec.suggest(optuna.trial.FixedTrial({"schedule": "high"}))
    assert overrides == ["stages.init.code_frac=0.6", "train.lr_peak=0.001"]
    bad = '"schedule" = { schedules = { x = { "stages.warmup.code_frac" = 0.1 } } }'
    with pytest.raises(CodemixError, match="schedule 'x'.*no stage 'warmup'"):
        load_study(write_study(name="bad", sampler="grid", search=bad))
    with pytest.raises(CodemixError, match="must be a table of settings"):
        load_study(write_study(name="bad2", search='"schedule" = { schedules = { x = 0.3 } }'))
