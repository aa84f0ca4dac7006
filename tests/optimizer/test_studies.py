"""Every study spec in studies/ loads with the current code, and one point of each space
builds a run spec. Nothing here trains or needs a token store."""

import math
import tomllib
from pathlib import Path

import optuna
import pytest

from codemix.optimizer.space import load_study

STUDIES = Path(__file__).resolve().parents[2] / "studies"
SPECS = sorted(p for p in STUDIES.glob("*.toml") if "study" in tomllib.loads(p.read_text()))

# one valid point of each study's space (the Optuna parameter names, not the overrides)
POINTS = {
    "code_share_sweep": {"stages.main.code_frac": 0.9},
    "init_variants": {"stages.init.code_frac": "code-first"},
    "cooldown_code": {"stages.cooldown.code_frac": 0.2},
    "web_vs_hq_code": {
        "groups.code.web_code": 0.6,
        "groups.code.hq_code": 0.2,
        "stages.main.code_frac": 0.4,
    },
}

GRIDS = {
    "code_share_sweep": {"stages.main.code_frac": [0.0, 0.25, 0.5, 0.75, 0.9, 1.0]},
    "init_variants": {"stages.init.code_frac": ["text-only", "balanced", "code-first"]},
    "cooldown_code": {"stages.cooldown.code_frac": [0.0, 0.2]},
    "anneal": {"anneal": ["control", "code-quarter", "code-half"]},
}


def default_point(spec) -> dict:
    """A valid point for a study without one in POINTS: first values, mid-ranges, even shares."""
    point = {}
    for p in spec.params:
        if p.kind == "float":
            point[p.key] = (p.low + p.high) / 2
        elif p.kind == "values":
            point[p.key] = p.values[0]
        elif p.kind in ("choices", "schedules"):
            point[p.key] = next(iter(p.choices))
        else:
            point.update({f"{p.key}.{d}": 1.0 for d in p.values})
    return point


def test_the_study_families_are_there():
    assert {p.stem for p in SPECS} >= set(GRIDS) | {"web_vs_hq_code"}


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_loads_and_builds_one_point(path):
    spec = load_study(path)
    if path.stem in GRIDS:
        assert spec.grid() == GRIDS[path.stem]
    if spec.sampler == "grid":  # a grid study runs each point of the product once
        assert spec.n_trials == math.prod(len(v) for v in spec.grid().values())
    point = POINTS.get(path.stem) or default_point(spec)
    run = spec.run_spec(spec.suggest(optuna.trial.FixedTrial(point)))
    for stage in run.schedule.stages:
        assert sum(stage.mixture.values()) == pytest.approx(1.0)


def test_sample_points_reach_the_mixtures():
    def build(stem):
        spec = load_study(STUDIES / f"{stem}.toml")
        run = spec.run_spec(spec.suggest(optuna.trial.FixedTrial(POINTS[stem])))
        return {s.name: s for s in run.schedule.stages}

    assert build("code_share_sweep")["main"].mixture["code"] == pytest.approx(0.9)
    stages = build("init_variants")
    assert stages["init"].mixture["code"] == pytest.approx(1.0)
    assert stages["continual"].mixture["code"] == pytest.approx(0.1)
    cooldown = build("cooldown_code")["cooldown"]
    assert cooldown.mixture["code"] == pytest.approx(0.2)
    assert (cooldown.lr.shape, cooldown.lr.start, cooldown.lr.end_lr) == (
        "linear",
        "continue",
        1e-6,
    )
    main = build("web_vs_hq_code")["main"].mixture  # code 0.4, split 3:1 web:hq
    assert main["web_code"] == pytest.approx(0.3)
    assert main["hq_code"] == pytest.approx(0.1)
    assert main["text"] == pytest.approx(0.6)


def test_the_stage_families_branch_where_their_trials_meet():
    from codemix.optimizer.branch import boundaries

    for stem, cuts in (("cooldown_code", [2]), ("anneal", [1]), ("init_variants", [])):
        spec = load_study(STUDIES / f"{stem}.toml")
        assert boundaries(spec, spec.run_spec([])) == cuts, stem
    anneal = load_study(STUDIES / "anneal.toml")
    assert anneal.control_param() == "anneal" and anneal.seeds == 2
