"""`codemix train` as a user runs it: kills, signals, a second process, bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from codemix.cli import main

SPEC = """
[data]
store = "{store}"
[model]
size = "test"
[train]
seq_len = 32
batch_size = 4
eval_tokens = 64
eval_every = 5
checkpoint_every_minutes = {ckpt_minutes}
[[stages]]
name = "init"
tokens = {tokens}
mixture = {{ text = 0.75, code = 0.25 }}
lr = {{ shape = "cosine", warmup = 0.05, end = 0.1 }}
"""


def _spec(tmp_path, store, tokens=76800, ckpt_minutes=10.0, name="s.toml"):
    path = tmp_path / name
    path.write_text(SPEC.format(store=store, tokens=tokens, ckpt_minutes=ckpt_minutes))
    return path


def _start(spec, out):
    return subprocess.Popen(
        [sys.executable, "-m", "codemix", "train", str(spec), "--out", str(out), "--quiet"],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _records(out):
    path = out / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []


def _checkpoints(out):
    folder = out / "checkpoints"
    return (
        sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []
    )


def _wait(proc, condition, seconds=180):
    deadline = time.time() + seconds
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            if condition():
                return
        except (ValueError, OSError):  # a line or a folder being written
            pass
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("timed out")


def _without_speed(records):
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in records]


def test_sigkill_mid_stage_then_resume_matches_an_uninterrupted_run(small_store, tmp_path):
    spec = _spec(tmp_path, small_store, ckpt_minutes=0.005)  # a checkpoint every 0.3 s
    out = tmp_path / "killed"
    proc = _start(spec, out)

    def past_a_checkpoint():  # metrics written after a checkpoint well into the stage
        ckpts, recs = _checkpoints(out), _records(out)
        return ckpts and recs and ckpts[-1] >= 100 and recs[-1]["step"] > ckpts[-1] + 5

    _wait(proc, past_a_checkpoint)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    killed_at = _records(out)[-1]["step"]
    assert 100 <= _checkpoints(out)[-1] < killed_at < 600
    assert main(["train", str(spec), "--out", str(out), "--quiet"]) == 0
    assert main(["train", str(spec), "--out", str(tmp_path / "whole"), "--quiet"]) == 0
    resumed, whole = _records(out), _records(tmp_path / "whole")
    assert [r["step"] for r in resumed] == list(range(5, 601, 5))
    assert _without_speed(resumed) == _without_speed(whole)  # lr and train loss included


def test_sigterm_writes_a_checkpoint_and_says_how_to_resume(small_store, tmp_path):
    spec = _spec(tmp_path, small_store)
    out = tmp_path / "run"
    proc = _start(spec, out)
    _wait(proc, lambda: len(_records(out)) >= 2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM" in err and "(written now)" in err
    assert f"resume with: codemix train {spec} --out {out} --quiet" in err
    step = _checkpoints(out)[-1]
    assert 10 <= step < 600
    assert not (out / "summary.json").exists()
    assert main(["train", str(spec), "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"


def test_a_second_process_on_the_same_folder_is_refused(small_store, tmp_path, capsys):
    spec = _spec(tmp_path, small_store)
    out = tmp_path / "run"
    proc = _start(spec, out)
    try:
        _wait(proc, lambda: len(_records(out)) >= 1)
        assert main(["train", str(spec), "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "is being written by another codemix process" in err and f"pid {proc.pid}" in err
    finally:
        proc.terminate()
        proc.communicate()
    records = _records(out)
    assert len({r["step"] for r in records}) == len(records)  # nothing written twice


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--set", "stages.init.mixture.web=0.25", "--set", "stages.init.mixture.text=0.5"],
            "mixes 'web'",
        ),
        (["--max-tokens", "0"], "--max-tokens 0: must be more than 0"),
        (["--max-tokens", "50"], "less than one step of 128 tokens"),
        (["--size", "7Q"], "7Q"),
        (["--set", 'data.store="nowhere"'], "resolved against the current folder"),
        # a validation split shorter than one window would be scored 0 bits per byte
        (["--set", "train.seq_len=1000000"], "needs at least 1,000,001 validation tokens"),
    ],
)
def test_bad_input_leaves_no_run_folder(small_store, tmp_path, capsys, args, message):
    spec = _spec(tmp_path, small_store)
    out = tmp_path / "run"
    assert main(["train", str(spec), "--out", str(out), "--quiet", *args]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not out.exists()
    assert "nowhere" not in message or str(spec) in err  # errors about the spec name it


def test_prints_the_tokens_each_stage_really_trains(small_store, tmp_path, capsys):
    spec = _spec(tmp_path, small_store, tokens=1000)  # 7.8 steps of 128 tokens: rounds to 8
    assert main(["train", str(spec), "--out", str(tmp_path / "r"), "--quiet"]) == 0
    assert "init 8 steps (1,024 tokens)" in capsys.readouterr().out


def test_a_validation_split_shorter_than_eval_tokens_is_read_whole_and_said(
    small_store, tmp_path, capsys
):
    spec = _spec(tmp_path, small_store, tokens=1000)
    out = tmp_path / "r"
    args = [
        "train",
        str(spec),
        "--out",
        str(out),
        "--quiet",
        "--set",
        "train.eval_tokens=1000000000",
    ]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "note: train.eval_tokens = 1,000,000,000" in err and "bits per byte read on text" in err
    assert json.loads((out / "summary.json").read_text())["final"]["bpb"]["text"] > 0
