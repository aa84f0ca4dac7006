"""Branched studies on CPU: trunks trained once, branches equal to runs from scratch."""

import json

import optuna
import polars as pl
import pytest

from codemix.cli import main
from codemix.core.errors import CodemixError
from codemix.optimizer.branch import boundaries
from codemix.optimizer.space import load_study
from codemix.proxy_train import train as train_mod

GRID = (
    '"stages.init.code_frac" = { values = [0.0, 0.5] }\n'
    '"stages.cooldown.code_frac" = { values = [0.0, 0.4] }'
)


def _export(path, tmp_path):
    out = tmp_path / f"{path.stem}.csv"
    assert main(["study", "export", str(path), "-o", str(out)]) == 0
    return pl.read_csv(out).sort("trial", "seed")


def _trunks(tmp_path, name):
    return sorted((tmp_path / "runs" / name / "trunks").glob("*-test/trunk.json"))


def test_trials_that_share_their_init_train_it_once(write_study, tmp_path):
    path = write_study(
        name="b",
        sampler="grid",
        n=4,
        max_tokens=1280,
        population=4,
        search=GRID,
        study_extra="diagonal = 1",
    )
    assert main(["study", "run", str(path), "--quiet"]) == 0
    infos = [json.loads(p.read_text()) for p in _trunks(tmp_path, "b")]
    assert len(infos) == 2 and all(i["status"] == "completed" and i["step"] == 8 for i in infos)
    df = _export(path, tmp_path)
    assert df.height == 4 and df["trunk"].n_unique() == 2
    trunk_flops = sum(i["flops"] for i in infos)
    # the runs' own steps plus each trunk once: 2 trunks of 8 steps, 4 branches of 2 steps
    assert df["flops_charged"].sum() == trunk_flops + df["flops"].sum() * 2 // 10
    assert df["flops_charged"].sum() == pytest.approx(0.6 * df["flops"].sum(), rel=1e-9)
    # the diagonal: trial 0 also from scratch, in a population of its own
    row = df.filter(pl.col("trial") == 0).row(0, named=True)
    assert row["scratch.flops"] == row["flops"]
    for d in ("text", "code"):
        assert row[f"scratch.bpb.{d}"] == pytest.approx(row[f"bpb.{d}"], rel=1e-4)
    assert df.filter(pl.col("trial") > 0)["scratch.bpb.text"].is_null().all()
    # a branch's record begins with its trunk's evaluations
    trial = tmp_path / "runs" / "b" / "trial-0001" / "test"
    steps = [json.loads(x)["step"] for x in open(trial / "metrics.jsonl")]
    assert steps == [8, 10]


def test_branch_false_trains_every_trial_from_step_zero(write_study, tmp_path):
    path = write_study(
        name="nb", sampler="grid", n=2, max_tokens=1280, search=GRID, study_extra="branch = false"
    )
    assert main(["study", "run", str(path), "--quiet"]) == 0
    assert not _trunks(tmp_path, "nb")
    df = _export(path, tmp_path)
    assert (df["flops_charged"] == df["flops"]).all() and df["trunk"].is_null().all()


def test_seeds_give_a_row_per_seed_and_the_mean_as_objective(write_study, tmp_path):
    path = write_study(
        name="s2",
        sampler="grid",
        n=2,
        max_tokens=1280,
        population=4,
        search='"stages.cooldown.code_frac" = { values = [0.0, 0.4] }',
        study_extra="seeds = 2",
    )
    assert main(["study", "run", str(path), "--quiet"]) == 0
    df = _export(path, tmp_path)
    assert df.height == 4 and sorted(df["seed"].to_list()) == [0, 0, 1, 1]
    assert len(_trunks(tmp_path, "s2")) == 2  # one init, two seeds
    for t in optuna.load_study(
        study_name="s2", storage=f"sqlite:///{path.with_suffix('.db')}"
    ).trials:
        rows = df.filter(pl.col("trial") == t.number)
        assert t.values[0] == pytest.approx(rows["bpb.text"].mean(), rel=1e-12)
        assert rows["bpb.text"][0] != rows["bpb.text"][1]  # the seeds differ
    # paired: both trials start from one initialisation, so they share seed 0's trunk
    assert df.filter(pl.col("seed") == 0)["trunk"].n_unique() == 1


def test_a_trunk_interrupted_mid_way_is_resumed_not_retrained(write_study, tmp_path, monkeypatch):
    search = '"stages.cooldown.code_frac" = { values = [0.0, 0.4] }'
    whole = write_study(name="w", sampler="grid", n=2, max_tokens=1280, search=search)
    assert main(["study", "run", str(whole), "--quiet"]) == 0
    path = write_study(name="i", sampler="grid", n=2, max_tokens=1280, search=search)
    real, fired = train_mod._stop_requested, []

    def stop_once(step, every):
        if step == 5 and not fired:
            fired.append(step)
            return True
        return real(step, every)

    monkeypatch.setattr(train_mod, "_stop_requested", stop_once)
    assert main(["study", "run", str(path), "--quiet"]) == 143  # as SIGTERM
    (info,) = _trunks(tmp_path, "i")
    assert "status" not in json.loads(info.read_text())  # begun, not finished
    monkeypatch.setattr(train_mod, "_stop_requested", real)
    assert main(["study", "run", str(path), "--quiet"]) == 0
    assert len(list((tmp_path / "runs" / "i" / "trunks" / "populations").iterdir())) == 1
    a, b = _export(whole, tmp_path), _export(path, tmp_path)
    assert a["bpb.text"].to_list() == b.filter(pl.col("state") == "complete")["bpb.text"].to_list()


@pytest.mark.parametrize(
    "search, cuts",
    [
        ('"stages.cooldown.code_frac" = { values = [0.0, 0.4] }', [1]),
        (GRID, [1]),
        # a continuous init makes every trunk its own: nothing to share
        (
            '"stages.init.code_frac" = { low = 0.0, high = 1.0 }\n'
            '"stages.cooldown.code_frac" = { values = [0.0, 0.4] }',
            [],
        ),
        ('"stages.init.code_frac" = { values = [0.0, 0.4] }', []),
        ('"train.lr_peak" = { values = [1e-3, 3e-3] }', []),
    ],
)
def test_boundaries_are_where_trials_can_meet(write_study, search, cuts):
    spec = load_study(write_study(search=search, sampler="random"))
    assert boundaries(spec, spec.run_spec([])) == cuts


def test_branching_needs_paired_seeds(write_study):
    with pytest.raises(CodemixError, match="paired"):
        load_study(write_study(study_extra='seeding = "per-trial"\nbranch = true'))
    spec = load_study(write_study(study_extra='seeding = "per-trial"'))
    assert not spec.branch and spec.member_seed(0, 3, 0) == 3


ANNEAL = (
    '"anneal" = { schedules = { control = { "stages.cooldown.code_frac" = 0.2 }, '
    'more = { "stages.cooldown.code_frac" = 0.6 } } }'
)


def test_a_microanneal_measures_every_branch_against_its_control(write_study, tmp_path):
    path = write_study(
        name="a",
        sampler="grid",
        n=2,
        max_tokens=1280,
        population=4,
        search=ANNEAL,
        study_extra='control = "control"\nseeds = 2',
    )
    assert main(["study", "run", str(path), "--quiet"]) == 0
    df = _export(path, tmp_path)
    assert df.height == 4 and len(_trunks(tmp_path, "a")) == 2  # a trunk per seed
    for seed in (0, 1):
        rows = df.filter(pl.col("seed") == seed)
        c = rows.filter(pl.col("choice.anneal") == "control").row(0, named=True)
        m = rows.filter(pl.col("choice.anneal") == "more").row(0, named=True)
        assert c["vs_control.bpb.text"] == 0.0
        assert m["vs_control.bpb.code"] == pytest.approx(m["bpb.code"] - c["bpb.code"], abs=1e-12)
        assert m["vs_control.bpb.code"] != 0  # the branches differ


@pytest.mark.parametrize(
    "extra, message",
    [
        ('control = "none"', "names no choice or schedule"),
        ('control = "control"\nsampler = "tpe"', "needs sampler = 'grid'"),
    ],
)
def test_a_control_must_be_a_trained_choice(write_study, extra, message):
    path = write_study(sampler="grid", n=2, search=ANNEAL, study_extra=extra)
    if "tpe" in extra:
        path.write_text(path.read_text().replace('sampler = "grid"\n', ""))
    with pytest.raises(CodemixError, match=message):
        load_study(path)


def test_a_study_seeded_per_trial_is_not_resumed_with_paired_seeds(write_study, capsys):
    path = write_study(name="old", n=1, study_extra='seeding = "per-trial"')
    assert main(["study", "run", str(path), "--quiet"]) == 0
    path.write_text(path.read_text().replace('seeding = "per-trial"', ""))
    assert main(["study", "run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert 'study.seeding = (unset) there, "paired" here' in err
    assert "seeding = 'per-trial' to go on with it" in err


def test_study_seed_alone_is_said_to_seed_the_sampler_not_the_models(
    write_study, capsys, monkeypatch
):
    """`--set study.seed=1` for a second seed repeats the first seed's models: said before
    any run; not said with train.seed, or without study.seed."""
    import codemix.optimizer.study as study

    monkeypatch.setattr(study, "run_study", lambda *a, **k: None)
    path = write_study(name="seeded", n=1)
    assert main(["study", "run", str(path), "--set", "study.seed=1", "--quiet"]) == 0
    assert "--set train.seed=K" in capsys.readouterr().err
    for more in (["--set", "study.seed=1", "--set", "train.seed=1"], []):
        assert main(["study", "run", str(path), *more, "--quiet"]) == 0
        assert "seeds the sampler only" not in capsys.readouterr().err


CONTINUAL = """[[stages]]
name = "continual"
tokens_per_param = 4
code_frac = 0.1
lr = { shape = "constant", start = "continue" }
"""


def test_trunks_chain_across_two_searched_boundaries(write_study, tmp_path):
    search = (
        '"stages.continual.code_frac" = { values = [0.1, 0.5] }\n'
        '"stages.cooldown.code_frac" = { values = [0.0, 0.4] }'
    )
    path = write_study(
        name="c",
        sampler="grid",
        n=4,
        max_tokens=2048,
        population=4,
        search=search,
        study_extra="diagonal = 4",
    )
    text = path.read_text()
    path.write_text(
        text.replace('[[stages]]\nname = "cooldown"', CONTINUAL + '[[stages]]\nname = "cooldown"')
    )
    spec = load_study(path)
    assert [s.name for s in spec.run_spec([]).schedule.stages] == ["init", "continual", "cooldown"]
    assert boundaries(spec, spec.run_spec([])) == [1, 2]
    assert main(["study", "run", str(path), "--quiet"]) == 0
    infos = [json.loads(p.read_text()) for p in _trunks(tmp_path, "c")]
    depth = sorted(len(i["identity"]["trains"].split("+")) for i in infos)
    assert depth == [1, 2, 2]  # init once, then init + continual for each continual mixture
    df = _export(path, tmp_path)
    for d in ("text", "code"):  # every trial trained both ways ends alike
        for a, b in zip(df[f"bpb.{d}"], df[f"scratch.bpb.{d}"], strict=True):
            assert a == pytest.approx(b, rel=1e-4)
    # each trunk once, and every branch its cooldown (scratch runs are not charged here)
    own = df["flops_charged"].sum() - sum(i["flops"] for i in infos)
    assert own == df["flops"].sum() * 2 // 16  # 10 + 4 + 2 steps


def test_two_workers_share_one_trunk(write_study, tmp_path):
    search = '"stages.cooldown.code_frac" = { values = [0.0, 0.2, 0.4, 0.6] }'
    path = write_study(
        name="two",
        sampler="tpe",
        n=4,
        max_tokens=1280,
        population=1,
        search=search,
        study_extra="start_trials = 2\nwave_size = 1",
    )
    assert main(["study", "run", str(path), "--workers", "2", "--quiet"]) == 0
    assert len(_trunks(tmp_path, "two")) == 1
    assert len(list((tmp_path / "runs" / "two" / "trunks" / "populations").iterdir())) == 1
    df = _export(path, tmp_path)
    assert df.filter(pl.col("state") == "complete").height == 4
    assert df["trunk"].n_unique() == 1
    # the trunk is charged once, to the run that trained it
    trunk_flops = json.loads(_trunks(tmp_path, "two")[0].read_text())["flops"]
    assert df["flops_charged"].sum() == trunk_flops + df["flops"].sum() * 2 // 10


def test_wsd_decays_branch_from_one_stable_trunk(write_study, tmp_path):
    """Decay shares 0.5, 0.25 and 0.1 of 20 steps: stable for 10, 15 and 18 steps."""
    path = write_study(
        name="wsd",
        sampler="grid",
        n=3,
        max_tokens=2560,
        population=4,
        search='"stages.init.lr.decay" = { values = [0.5, 0.25, 0.1] }',
        study_extra="diagonal = 3",
    )
    text = path.read_text()
    one = (
        text[: text.index("[[stages]]")]
        + (
            '[[stages]]\nname = "init"\ntokens_per_param = 10\ncode_frac = 0.25\n'
            'lr = { shape = "wsd", warmup = 0.05, decay = 0.2, end_lr = 1e-6 }\n'
        )
        + text[text.index("[study]") :]
    )
    path.write_text(one)
    assert main(["study", "run", str(path), "--quiet"]) == 0
    infos = sorted(
        (json.loads(p.read_text()) for p in _trunks(tmp_path, "wsd")), key=lambda i: i["step"]
    )
    assert [(i["step"], i["identity"]["trains"]) for i in infos] == [
        (10, "init[:10]"),
        (15, "init[:15]"),
    ]
    df = _export(path, tmp_path)
    # trunks of 10 and 5 steps, then 10, 5 and 5 steps of decay (and stable): 35 of 60
    assert df["flops_charged"].sum() == df["flops"].sum() * 35 // 60
    for d in ("text", "code"):
        for a, b in zip(df[f"bpb.{d}"], df[f"scratch.bpb.{d}"], strict=True):
            assert a == pytest.approx(b, rel=1e-4)


def test_a_study_says_what_branching_saves(write_study, capsys):
    path = write_study(name="say", sampler="grid", n=4, max_tokens=1280, population=4, search=GRID)
    assert main(["study", "run", str(path)]) == 0
    out = capsys.readouterr().out
    assert (
        "size test: 4 runs branch from 2 trunks (2 to train): 24 steps instead of 40 (60%)" in out
    )


def test_a_trunk_whose_state_was_deleted_is_restored_from_its_population(write_study, tmp_path):
    import shutil

    from codemix.optimizer import branch
    from codemix.optimizer.wave import train_job
    from codemix.proxy_train.store import TokenStore
    from codemix.proxy_train.trunks import finished

    search = '"stages.cooldown.code_frac" = { values = [0.0, 0.4] }'
    path = write_study(name="del", sampler="grid", n=2, max_tokens=1280, search=search)
    assert main(["study", "run", str(path), "--quiet"]) == 0
    (info,) = _trunks(tmp_path, "del")
    before = (info.parent / "state").stat().st_mtime
    shutil.rmtree(info.parent / "state")
    assert not finished(info.parent)  # so the next wave that needs it makes it again
    spec = load_study(path)
    study = optuna.load_study(study_name="del", storage=f"sqlite:///{path.with_suffix('.db')}")
    batch = [(t, spec.run_spec(t.user_attrs["codemix/overrides"])) for t in study.trials]
    store = TokenStore(spec.run_spec([]).store)
    units = branch.units(spec, store, "test", batch)
    charged = branch.ensure_trunks(
        spec, store, "test", units, lambda job: train_job(spec, store, job), quiet=True
    )
    assert finished(info.parent) and (info.parent / "state").stat().st_mtime > before
    assert list(charged) == [units[0].chain[0]]  # from its population's last checkpoint
    assert charged[units[0].chain[0]] == 0  # its FLOPs were charged when it was trained


@pytest.mark.parametrize(
    "extra, message",
    [
        ('seeding = "random"', "seeding: expected one of paired, per-trial"),
        ("seeds = 0", "seeds must be >= 1"),
        ("diagonal = -1", "diagonal >= 0"),
        ('branch = "yes"', "branch = 'yes' has the wrong type"),
        ("seeds = true", "seeds = True has the wrong type"),
    ],
)
def test_bad_branching_keys_are_named(write_study, extra, message):
    with pytest.raises(CodemixError, match=message):
        load_study(write_study(study_extra=extra))
