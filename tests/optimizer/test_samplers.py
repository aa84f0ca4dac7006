"""The sampler a study asks through: a Sobol start, then per-trial seeds."""

import optuna
import pytest

from codemix.optimizer.samplers import (
    make_sampler,
    sobol_point,
    study_sampler,
    to_distribution,
    trial_seed,
)

SPACE = {
    "a": optuna.distributions.FloatDistribution(0.0, 1.0),
    "b": optuna.distributions.FloatDistribution(1e-4, 1.0, log=True),
    "c": optuna.distributions.CategoricalDistribution(["x", "y", "z"]),
}


def _ask(study, n):
    trials = [study.ask() for _ in range(n)]
    points = [
        (
            t.suggest_float("a", 0, 1),
            t.suggest_float("b", 1e-4, 1, log=True),
            t.suggest_categorical("c", ["x", "y", "z"]),
        )
        for t in trials
    ]
    for t, p in zip(trials, points, strict=True):
        study.tell(t, p[0] + p[1])
    return points


def test_trial_seeds_differ_by_trial_and_study_seed():
    seeds = {trial_seed(s, n) for s in range(3) for n in range(100)}
    assert len(seeds) == 300 and trial_seed(0, 5) == trial_seed(0, 5)


def test_the_start_is_sobol_points_and_the_same_for_every_caller():
    study = optuna.create_study(sampler=study_sampler("tpe", 7, SPACE, start=4))
    points = _ask(study, 4)
    for n, p in enumerate(points):
        u = sobol_point(n, 3, 7)
        assert p == (
            to_distribution(u[0], SPACE["a"]),
            to_distribution(u[1], SPACE["b"]),
            to_distribution(u[2], SPACE["c"]),
        )


@pytest.mark.parametrize("name", ["tpe", "random", "qmc", "nsga2"])
def test_two_samplers_on_one_storage_never_repeat_a_point(name, tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    a = optuna.create_study(study_name="s", storage=url, sampler=study_sampler(name, 0, SPACE, 2))
    b = optuna.load_study(study_name="s", storage=url, sampler=study_sampler(name, 0, SPACE, 2))
    points = []
    for _ in range(4):  # two "workers" asking in turn, as waves interleave
        points += _ask(a, 2) + _ask(b, 2)
    continuous = [p[:2] for p in points]
    assert len(set(continuous)) == len(continuous)


def test_a_study_replays_from_its_seed():
    runs = [_ask(optuna.create_study(sampler=study_sampler("tpe", 3, SPACE, 2)), 8) for _ in "ab"]
    assert runs[0] == runs[1]


def test_to_distribution_stays_inside():
    for u in (0.0, 0.5, 0.999999):
        assert 1e-4 <= to_distribution(u, SPACE["b"]) <= 1.0
        assert to_distribution(u, SPACE["c"]) in ("x", "y", "z")


def test_unknown_sampler_is_a_clear_error():
    from codemix.core.errors import CodemixError

    with pytest.raises(CodemixError, match="expected one of"):
        make_sampler("cmaes")
