"""The `codemix` command end to end, as a user types it."""

import subprocess
import sys

import pytest

from codemix.cli import main


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "prepare" in capsys.readouterr().out


def test_prepare_then_info(tmp_path, capsys):
    for i in range(6):
        (tmp_path / f"d{i}.txt").write_text(f"document number {i} " * 30)
        (tmp_path / f"c{i}.py").write_text(f"x{i} = {i}\n" * 30)
    argv = [
        "prepare",
        "--domain",
        f"text={tmp_path}/*.txt",
        "--domain",
        f"code={tmp_path}/*.py",
        "--tokenizer",
        "bytes",
        "--out",
        str(tmp_path / "store"),
        "--quiet",
    ]
    assert main(argv) == 0
    assert "built" in capsys.readouterr().out
    assert main(argv) == 0
    assert "up to date" in capsys.readouterr().out
    assert main(["store", "info", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out
    assert "text" in out and "code" in out and "train_tokens" in out
    assert main(["prepare", "--summary", str(tmp_path / "store")]) == 0
    assert "bytes_per_token" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["prepare", "--domain", "text", "--out", "x"], "expected NAME=PATH_OR_GLOB"),
        (["prepare", "--domain", "t=/nonexistent/*.txt", "--out", "x"], "no file matches"),
        (["prepare", "--builtin"], "--out DIR is required"),
        (["prepare", "--builtin", "--out", "x", "--tokenizer", "bpe:x"], "integer VOCAB"),
        (["store", "info", "/nonexistent"], "not a token store"),
        (["study", "export", "--study", "s", "--storage", "sqlite:///x", "-o", "o.csv"], "no file"),
    ],
)
def test_bad_arguments_give_one_clear_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("codemix: error:") and message in err
    assert "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_console_script_runs():
    out = subprocess.run(
        [sys.executable, "-m", "codemix", "--help"], capture_output=True, text=True, check=True
    )
    assert "usage: codemix" in out.stdout
