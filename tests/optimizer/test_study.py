"""Studies end to end on CPU with the "test" preset: few trials, a few steps each."""

import importlib.util
import os
import signal
import subprocess
import sys
import time

import optuna
import polars as pl
import pytest

from codemix.cli import main
from codemix.optimizer.space import load_study

POSTGRES = os.environ.get("CODEMIX_TEST_POSTGRES")  # set by .ci/run, which starts a server
BACKENDS = ["sqlite", "postgresql"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _url(backend, tmp_path, name):
    if backend == "postgresql":
        if not POSTGRES:
            pytest.skip("CODEMIX_TEST_POSTGRES is not set (.ci/run sets it)")
        return POSTGRES
    return f"sqlite:///{tmp_path / (name + '.db')}"


def _unique(prefix):
    return f"{prefix}{os.getpid()}{time.time_ns() % 10**9}"


def _study(path, url=None):
    spec = load_study(path)
    return optuna.load_study(
        study_name=spec.name, storage=url or f"sqlite:///{path.parent / (path.stem + '.db')}"
    )


def _states(study):
    return sorted(t.state.name for t in study.get_trials())


def _complete(study):
    return [t for t in study.get_trials() if t.state.name == "COMPLETE"]


def _points(study):
    return [tuple(sorted(t.params.items())) for t in study.get_trials() if t.params]


def _start(argv):
    return subprocess.Popen(
        [sys.executable, "-m", "codemix", *argv],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(condition, proc, seconds=180):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"exited early ({proc.returncode}): {out[-2000:]} {err[-2000:]}")
        try:
            if condition():
                return
        except Exception:  # the study or its tables are not there yet
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("timed out")


def test_study_end_to_end_resume_and_export(write_study, tmp_path, capsys):
    path = write_study(n=3)
    assert main(["study", "run", str(path), "--quiet"]) == 0
    study = _study(path)
    done = _complete(study)
    assert len(done) == 3 and all(t.values[0] > 0 for t in done)
    assert all("codemix/result/test" in t.user_attrs for t in done)
    assert study.metric_names == ["bpb.text"]  # what optuna-dashboard shows
    capsys.readouterr()
    assert main(["study", "run", str(path), "--quiet"]) == 0  # resumes: nothing left to do
    assert "study s: complete, 3 of 3 trials" in capsys.readouterr().out
    assert len(_study(path).get_trials()) == 3
    # the study records its store, so a trial's checkpoint opens without being told it
    from codemix.evaluation.checkpoint import load_run

    spec = load_study(path)
    trial = load_run(spec.out / "trial-0000" / spec.sizes[-1])
    assert trial.store.path.resolve() == spec.run_spec([]).store.resolve()
    assert main(["study", "export", str(path), "-o", str(tmp_path / "r.parquet")]) == 0
    df = pl.read_parquet(tmp_path / "r.parquet")
    assert df.height == 3
    for col in (
        "param.stages.init.code_frac",
        "mix.init.code",
        "code_frac.init",
        "code_frac.cooldown",
        "bpb.text",
        "loss.code",
        "params",
        "vocab_size",
        "tokens",
        "flops",
        "epochs.text",
        "tokens.cooldown",
        "size",
        "code_domains",
        "time.compile_s",
        "time.steps_s",
    ):
        assert col in df.columns, col
    # the realised share follows the proposed one, and code_frac is the code group's share
    assert (df["mix.init.code"] - df["param.stages.init.code_frac"]).abs().max() < 0.05
    assert (df["code_frac.init"] == df["mix.init.code"]).all()
    assert set(df["code_domains"]) == {"code"}


def test_export_gives_simplex_shares_as_trained_and_choice_names(write_study, tmp_path):
    """The Optuna draws of a simplex are not what trained; their shares are."""
    search = (
        '"stages.cooldown.code_frac" = { choices = { none = 0.0, some = 0.3 } }\n'
        '"stages.init.mixture" = { simplex = ["text", "code"] }'
    )
    path = write_study(n=2, population=2, search=search)
    text = path.read_text().replace("code_frac = 0.25\n", "mixture = { text = 0.5, code = 0.5 }\n")
    path.write_text(text)
    assert main(["study", "run", str(path), "--quiet"]) == 0
    assert main(["study", "export", str(path), "-o", str(tmp_path / "r.csv")]) == 0
    df = pl.read_csv(tmp_path / "r.csv")
    shares = df["param.stages.init.mixture.text"] + df["param.stages.init.mixture.code"]
    assert (shares - 1).abs().max() < 1e-9  # shares, not raw draws
    assert (df["param.stages.init.mixture.code"] - df["mix.init.code"]).abs().max() < 0.05
    assert set(df["choice.stages.cooldown.code_frac"]) <= {"none", "some"}
    assert set(df["param.stages.cooldown.code_frac"]) <= {0.0, 0.3}


def test_sigint_in_the_second_wave_then_two_reruns_end_with_exactly_n(write_study, capsys):
    """TPE asks a start wave of 2, then waves of 2: SIGINT while the second wave trains."""
    path = write_study(
        n=6, sampler="tpe", max_tokens=40960, study_extra="start_trials = 2\nwave_size = 2"
    )
    proc = _start(["study", "run", str(path)])

    def second_wave_running():
        trials = _study(path).get_trials()
        return any(t.number >= 2 and t.state.name == "RUNNING" for t in trials)

    _wait_for(second_wave_running, proc)
    time.sleep(1.0)  # inside the training loop
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "stopped by SIGINT" in err
    assert f"resume with: codemix study run {path}" in err
    assert "waves to go" in out  # the first wave reported, with the waves left
    study = _study(path)
    assert not [t for t in study.get_trials() if t.state.name == "RUNNING"]
    interrupted = [t for t in study.get_trials() if "codemix/interrupted" in t.user_attrs]
    assert interrupted and all(t.state.name == "FAIL" for t in interrupted)

    assert main(["study", "run", str(path), "--quiet"]) == 0
    assert main(["study", "run", str(path), "--quiet"]) == 0
    assert "complete, 6 of 6 trials" in capsys.readouterr().out
    study = _study(path)
    assert len(_complete(study)) == 6
    assert not [t for t in study.get_trials() if t.state.name in ("RUNNING", "WAITING")]
    # each interrupted trial was retried once, with its parameters, in its run folder
    for t in interrupted:
        (retry,) = [
            r for r in study.get_trials() if r.user_attrs.get("codemix/retry_of") == t.number
        ]
        assert retry.state.name == "COMPLETE" and retry.params == t.params
    assert len(set(_points(study))) == len(_points(study)) - len(interrupted)


def test_sigterm_in_a_worker_stops_it_cleanly(write_study):
    path = write_study(n=2, population=2, max_tokens=40960)
    proc = _start(["study", "run", str(path), "--quiet"])
    _wait_for(lambda: any(t.state.name == "RUNNING" for t in _study(path).get_trials()), proc)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "stopped by SIGTERM" in err
    states = _states(_study(path))
    assert "RUNNING" not in states and states.count("WAITING") == 2


def test_sigint_to_a_study_with_two_workers_stops_both(write_study, capsys):
    path = write_study(n=4, population=1, max_tokens=40960)
    proc = _start(["study", "run", str(path), "--workers", "2", "--quiet"])

    def both_training():
        return sum(t.state.name == "RUNNING" for t in _study(path).get_trials()) >= 2

    _wait_for(both_training, proc)
    time.sleep(2)
    proc.send_signal(signal.SIGINT)  # the first worker forwards it to the second
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert not [t for t in _study(path).get_trials() if t.state.name == "RUNNING"]
    assert main(["study", "run", str(path), "--quiet"]) == 0
    study = _study(path)
    assert len(_complete(study)) == 4
    assert not [t for t in study.get_trials() if t.state.name in ("RUNNING", "WAITING")]


def test_two_sizes_with_halving(write_study, tmp_path):
    path = write_study(n=4, population=4, sizes='["test", "0.5M"]')
    path.write_text(
        path.read_text().replace(
            'sizes = ["test", "0.5M"]', 'sizes = ["test", "0.5M"]\npromotion = "halving"'
        )
    )
    assert main(["study", "run", str(path), "--quiet"]) == 0
    trials = _study(path).get_trials()
    assert _states(_study(path)) == ["COMPLETE", "COMPLETE", "PRUNED", "PRUNED"]
    for t in trials:
        assert "codemix/result/test" in t.user_attrs
        assert ("codemix/result/0.5M" in t.user_attrs) == (t.state.name == "COMPLETE")


def test_same_name_other_space_is_refused(write_study, capsys):
    path = write_study(n=1, population=1)
    assert main(["study", "run", str(path), "--quiet"]) == 0
    other = write_study(n=1, search='"stages.cooldown.code_frac" = { low = 0.0, high = 0.5 }')
    assert main(["study", "run", str(other), "--quiet"]) == 2
    assert "exists with another search space" in capsys.readouterr().err
    assert len(_study(path).get_trials()) == 1


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ("study.max_tokens=1280", "study.max_tokens"),
        ('study.sizes=["test", "0.5M"]', "study.sizes"),
        ("stages.cooldown.tokens_per_param=3", "stages.cooldown.tokens_per_param"),
        ("train.lr_peak=1e-3", "train.lr_peak"),
        ('model.size="0.5M"', "model.size"),
    ],
)
def test_changing_what_a_trial_trains_is_refused(write_study, capsys, change, key):
    path = write_study(n=1, population=1)
    assert main(["study", "run", str(path), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["study", "run", str(path), "--quiet", "--n-trials", "2", "--set", change]) == 2
    err = capsys.readouterr().err
    assert "trained its trials otherwise" in err and key in err, err
    assert len(_study(path).get_trials()) == 1  # nothing trained
    # what does not change a trial's training may change: the sampler, the trial count
    assert (
        main(
            ["study", "run", str(path), "--quiet", "--n-trials", "2", "--set", "study.sampler=qmc"]
        )
        == 0
    )


def test_a_store_with_other_contents_is_refused(write_study, tmp_path, capsys):
    from tests.conftest import small_builtin

    path = write_study(n=1, population=1)
    assert main(["study", "run", str(path), "--quiet"]) == 0
    other = tmp_path / "other-store"
    domains = small_builtin()
    argv = ["prepare", "--tokenizer", "bytes", "--out", str(other), "--quiet"]
    argv += ["--domain", f"text={domains['text'][0]}", "--domain", f"text={domains['text'][1]}"]
    argv += ["--domain", f"code={domains['code'][0]}", "--extensions", ".py"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["study", "run", str(path), "--quiet", "--set", f'data.store="{other}"']) == 2
    assert "token store with other contents" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('metric = "bpb.text"', 'metric = "bpb.txt"'), "objective 'bpb.txt'"),
        (("code_frac = 0.2\n", "mixture = { text = 0.5, web = 0.5 }\n"), "mixes 'web'"),
        (('sizes = ["test"]', 'sizes = ["3Q"]'), "3Q"),
        (("max_tokens = 640", "max_tokens = 64"), "less than one step"),
        (('store = "', 'store = "nowhere/'), "resolved against the current folder"),
    ],
)
def test_a_spec_that_fails_validation_writes_nothing(write_study, tmp_path, capsys, edit, message):
    path = write_study(n=1, population=1)
    path.write_text(path.read_text().replace(*edit, 1))
    assert main(["study", "run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err, err
    assert not (tmp_path / "s.db").exists()
    assert not (tmp_path / "runs").exists()


def _kill_while_training(path, url) -> list[int]:
    """SIGKILL a worker once it trains; the numbers of the trials it left RUNNING."""
    proc = _start(["study", "run", str(path), "--storage", url, "--quiet"])

    def running():
        return [t.number for t in _study(path, url).get_trials() if t.state.name == "RUNNING"]

    _wait_for(lambda: bool(running()), proc)
    time.sleep(2)  # the worker beats right after it asks; a kill before that is not detectable
    left = running()  # the whole wave has been asked by now
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    return left


@pytest.mark.parametrize(
    ("backend", "wait"), [("sqlite", 0), ("sqlite", 5), ("postgresql", 0), ("postgresql", 5)]
)
def test_a_killed_workers_trials_are_retried(write_study, tmp_path, capsys, backend, wait):
    """SIGKILL leaves trials RUNNING. A re-run at once waits out the grace period (4 s);
    one after it finds them stale. Either retries them with the same parameters."""
    name = _unique("k")
    path = write_study(name=name, n=2, population=1, max_tokens=40960)
    url = _url(backend, tmp_path, name)
    running = _kill_while_training(path, url)
    time.sleep(wait)
    assert main(["study", "run", str(path), "--storage", url, "--quiet"]) == 0
    assert ("running elsewhere" in capsys.readouterr().out) == (wait == 0)
    trials = _study(path, url).get_trials()
    assert len(_complete(_study(path, url))) == 2
    lost = [t for t in trials if t.state.name == "FAIL"]
    assert [t.number for t in lost] == running  # the killed worker's trials, and only them
    for t in lost:
        (retry,) = [r for r in trials if r.user_attrs.get("codemix/retry_of") == t.number]
        assert retry.state.name == "COMPLETE" and retry.params == t.params


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("workers", [2, 4])
def test_parallel_workers_train_each_trial_once_at_distinct_points(
    write_study, tmp_path, backend, workers
):
    name = _unique("w")
    path = write_study(name=name, n=6, population=1, sampler="tpe", study_extra="start_trials = 2")
    url = _url(backend, tmp_path, name)
    argv = ["study", "run", str(path), "--storage", url, "--workers", str(workers), "--quiet"]
    assert main(argv) == 0
    study = optuna.load_study(study_name=name, storage=url)
    done = _complete(study)
    assert len(done) == 6
    assert len({tuple(t.params.items()) for t in done}) == 6  # no point proposed twice
    runs = sorted((tmp_path / "runs" / name).glob("trial-*/test/summary.json"))
    assert len(runs) == len({r.parent.parent.name for r in runs}) == 6
    extra = [t for t in study.get_trials() if t.state.name != "COMPLETE"]
    assert all(t.user_attrs.get("codemix/surplus") for t in extra)  # asked, never trained


def test_a_resumed_study_does_not_repeat_its_first_points(write_study):
    path = write_study(n=2, population=2)
    assert main(["study", "run", str(path), "--quiet"]) == 0
    assert main(["study", "run", str(path), "--quiet", "--n-trials", "4"]) == 0
    points = _points(_study(path))
    assert len(points) == 4 and len(set(points)) == 4


def test_a_study_replays_from_its_seed(write_study, tmp_path):
    """One worker's proposals depend only on the seed and the results."""
    runs = []
    for name in ("a", "b"):
        path = write_study(name=name, n=5, sampler="tpe", study_extra="start_trials = 2")
        assert main(["study", "run", str(path), "--quiet"]) == 0
        runs.append(_points(_study(path)))
    assert runs[0] == runs[1]


SAMPLERS = ["tpe", "nsga2", "qmc", "random"]
if importlib.util.find_spec("torch"):
    SAMPLERS.append("gp")


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_runs_a_study(write_study, sampler):
    path = write_study(n=4, sampler=sampler, population=4, study_extra="start_trials = 2")
    assert main(["study", "run", str(path), "--quiet"]) == 0
    study = _study(path)
    assert len(_complete(study)) == 4 and len(set(_points(study))) == 4


def test_a_pareto_study_in_journal_storage(write_study, tmp_path):
    path = write_study(
        n=3, sampler="tpe", population=3, extra='[[objectives]]\nmetric = "bpb.code"\n'
    )
    url = f"journal:{tmp_path / 'j.log'}"
    assert main(["study", "run", str(path), "--storage", url, "--quiet"]) == 0
    study = optuna.load_study(
        study_name="s",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(tmp_path / "j.log"))
        ),
    )
    assert len(study.directions) == 2 and len(_complete(study)) == 3
    assert study.best_trials and study.metric_names == ["bpb.text", "bpb.code"]


def test_nan_trials_fail_with_their_reason(write_study):
    path = write_study(n=2, search='"train.lr_peak" = { values = [1e30] }')
    path.write_text(path.read_text().replace("lr_peak = 3e-3", "lr_peak = 3e-3\ngrad_clip = 1e30"))
    assert main(["study", "run", str(path), "--quiet"]) == 0
    trials = _study(path).get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"]
    assert all("loss became" in t.user_attrs["codemix/reason"] for t in trials)


def test_grid_study_runs_to_the_end_of_its_grid(write_study, capsys):
    search = '"stages.init.code_frac" = { values = [0.0, 0.5] }'
    path = write_study(sampler="grid", n=2, search=search)
    assert main(["study", "run", str(path), "--quiet"]) == 0
    trials = _study(path).get_trials()
    assert sorted(t.params["stages.init.code_frac"] for t in trials) == [0.0, 0.5]
    assert main(["study", "run", str(path), "--n-trials", "3", "--quiet"]) == 2


def test_progress_lines_name_the_trials_and_sizes(write_study, capsys):
    path = write_study(n=2, population=2, sizes='["test", "0.5M"]')
    assert main(["study", "run", str(path)]) == 0
    err = capsys.readouterr().err  # not a terminal here: plain lines, no carriage returns
    assert "wave 1 of 1: trials 0,1, size test (1 of 2)" in err and "size 0.5M (2 of 2)" in err
    assert "\r" not in err


@pytest.mark.parametrize("password", ["p@ss:w/rd", "s3cr%t", "a%40b%2Fc", "x@y@z"])
def test_storage_passwords_never_reach_the_terminal(write_study, tmp_path, capsys, password):
    path = write_study(n=1, population=1)
    url = f"postgresql://me:{password}@127.0.0.1:1/db"
    for argv in (
        ["study", "run", str(path), "--storage", url, "--quiet"],
        ["study", "export", "--study", "s", "--storage", url, "-o", str(tmp_path / "x.csv")],
    ):
        assert main(argv) == 2
        out = capsys.readouterr()
        text = out.out + out.err
        assert "unreachable" in text and "me:***@127.0.0.1:1/db" in text
        for piece in {password, *password.replace("%", "@").split("@")} - {""}:
            if len(piece) > 1:
                assert piece not in text, (piece, text)


def test_a_study_on_downstream_tasks(write_study, task_store, tmp_path, capsys):
    """[evals] scores tasks at every stage end; an objective on a family's bits per byte;
    the export names every task and family metric."""
    evals = '[evals]\nsuite = "copa,triviaqa"\n'
    objective = '[[objectives]]\nmetric = "bpb.text"'
    path = write_study(n=2, population=2, store=task_store)
    text = path.read_text().replace(objective, '[[objectives]]\nmetric = "task.nl_reasoning.bpb"')
    path.write_text(evals + text)
    assert main(["study", "run", str(path), "--quiet"]) == 0
    assert main(["study", "export", str(path), "-o", str(tmp_path / "r.csv")]) == 0
    df = pl.read_csv(tmp_path / "r.csv")
    for col in (
        "task.copa.acc",
        "task.copa.bpb",
        "task.triviaqa.bpb",
        "task.nl_reasoning.acc",
        "task.world_knowledge.bpb",
        "task.copa.items",
    ):
        assert col in df.columns, col
    assert (df["objective.0"] == df["task.nl_reasoning.bpb"]).all()
    # an objective the suite cannot report, and a suite the store has not rendered
    path.write_text(path.read_text().replace("task.nl_reasoning.bpb", "task.triviaqa.acc"))
    assert main(["study", "run", str(path), "--quiet"]) == 2
    assert "reports bpb and correct_prob only" in capsys.readouterr().err
    other = write_study(name="o", n=1, population=1)
    other.write_text(evals + other.read_text())
    assert main(["study", "run", str(other), "--quiet"]) == 2
    assert "codemix evals prepare" in capsys.readouterr().err
