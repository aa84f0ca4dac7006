"""Studies end to end on CPU with the "test" preset: few trials, a few steps each."""

import os
import signal
import subprocess
import sys
import time

import optuna
import polars as pl
import pytest

from codemix.cli import main
from codemix.errors import CodemixError
from optimizer.space import load_study
from optimizer.study import open_study

POSTGRES = os.environ.get("CODEMIX_TEST_POSTGRES")  # set by .ci/run, which starts a server


def _study(path, url):
    return optuna.load_study(study_name=load_study(path).name, storage=url)


def _completed(study):
    return [t for t in study.get_trials() if t.state.name == "COMPLETE"]


def test_study_end_to_end_resume_and_export(write_study, tmp_path, capsys):
    path = write_study(n=3)
    assert main(["study", "run", str(path), "--quiet"]) == 0
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = _study(path, url)
    done = _completed(study)
    assert len(done) == 3 and all(t.values[0] > 0 for t in done)
    assert all("codemix/result/test" in t.user_attrs for t in done)
    assert main(["study", "run", str(path), "--quiet"]) == 0  # resumes: nothing left to do
    assert len(_study(path, url).get_trials()) == 3
    assert main(["study", "export", str(path), "-o", str(tmp_path / "r.parquet")]) == 0
    df = pl.read_parquet(tmp_path / "r.parquet")
    assert df.height == 3
    for col in (
        "param_stages.init.code_frac",
        "mix_init_code",
        "bpb_text",
        "loss_code",
        "params",
        "tokens",
        "flops",
        "epochs_text",
        "size",
    ):
        assert col in df.columns
    # the realised share follows the proposed one
    assert (df["mix_init_code"] - df["param_stages.init.code_frac"]).abs().max() < 0.05


def test_two_sizes_with_halving(write_study, tmp_path):
    path = write_study(n=4, population=4, sizes='["test", "0.5M"]')
    path.write_text(
        path.read_text().replace(
            'sizes = ["test", "0.5M"]', 'sizes = ["test", "0.5M"]\npromotion = "halving"'
        )
    )
    assert main(["study", "run", str(path), "--quiet"]) == 0
    trials = _study(path, f"sqlite:///{tmp_path / 's.db'}").get_trials()
    states = sorted(t.state.name for t in trials)
    assert states == ["COMPLETE", "COMPLETE", "PRUNED", "PRUNED"]
    for t in trials:
        assert "codemix/result/test" in t.user_attrs
        assert ("codemix/result/0.5M" in t.user_attrs) == (t.state.name == "COMPLETE")


def test_same_name_other_space_is_refused(write_study, tmp_path):
    path = write_study(n=1, population=1)
    assert main(["study", "run", str(path), "--quiet"]) == 0
    url = f"sqlite:///{tmp_path / 's.db'}"
    other = write_study(n=1, search='"stages.cooldown.code_frac" = { low = 0.0, high = 0.5 }')
    with pytest.raises(CodemixError, match="exists with another search space"):
        open_study(load_study(other), url)
    assert len(_study(path, url).get_trials()) == 1


def test_nan_trials_fail_with_their_reason(write_study, tmp_path):
    path = write_study(n=2, search='"train.lr_peak" = { values = [1e30] }')
    path.write_text(path.read_text().replace("lr_peak = 3e-3", "lr_peak = 3e-3\ngrad_clip = 1e30"))
    assert main(["study", "run", str(path), "--quiet"]) == 0
    trials = _study(path, f"sqlite:///{tmp_path / 's.db'}").get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"]
    assert all("loss became" in t.user_attrs["codemix/reason"] for t in trials)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_four_workers_run_each_trial_once(write_study, tmp_path, backend):
    if backend == "postgresql" and not POSTGRES:
        pytest.skip("CODEMIX_TEST_POSTGRES is not set (.ci/run sets it)")
    name = f"w{os.getpid()}{int(time.time())}"
    path = write_study(name=name, n=6, population=1)
    url = POSTGRES if backend == "postgresql" else f"sqlite:///{tmp_path / 'w.db'}"
    assert main(["study", "run", str(path), "--storage", url, "--workers", "4", "--quiet"]) == 0
    study = optuna.load_study(study_name=name, storage=url)
    trials = study.get_trials()
    done = _completed(study)
    assert len(done) == 6
    runs = sorted((tmp_path / "runs" / name).glob("trial-*/test/summary.json"))
    assert len(runs) == len({r.parent.parent.name for r in runs}) == 6
    extra = [t for t in trials if t.state.name != "COMPLETE"]
    assert all(t.user_attrs.get("codemix/surplus") for t in extra)  # asked, never trained


def test_killed_worker_trial_is_retried(write_study, tmp_path):
    path = write_study(n=2, population=1, max_tokens=40960)
    url = f"sqlite:///{tmp_path / 's.db'}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "codemix", "study", "run", str(path), "--quiet"], env=env
    )
    deadline = time.time() + 120
    running = []
    while time.time() < deadline and not running:  # wait until a trial is training
        time.sleep(0.5)
        try:
            study = _study(path, url)
        except KeyError:
            continue
        running = [t.number for t in study.get_trials() if t.state.name == "RUNNING"]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert running, "the worker never started a trial"
    time.sleep(5)  # past the grace period: the trial is stale
    fast = write_study(n=2, population=1, max_tokens=640)
    assert main(["study", "run", str(fast), "--quiet"]) == 0
    trials = _study(path, url).get_trials()
    assert len(_completed(_study(path, url))) == 2
    lost = [t for t in trials if t.state.name == "FAIL"]
    assert [t.number for t in lost] == running  # the killed worker's trial, and only it
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == running[0]]
    assert retry and retry[0].params == lost[0].params


def test_grid_study_runs_to_the_end_of_its_grid(write_study, tmp_path):
    search = '"stages.init.code_frac" = { values = [0.0, 0.5] }'
    path = write_study(sampler="grid", n=2, search=search)
    assert main(["study", "run", str(path), "--quiet"]) == 0
    trials = _study(path, f"sqlite:///{tmp_path / 's.db'}").get_trials()
    assert sorted(t.params["stages.init.code_frac"] for t in trials) == [0.0, 0.5]
    assert main(["study", "run", str(path), "--n-trials", "3", "--quiet"]) == 2
