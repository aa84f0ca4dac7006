import subprocess
import sys

from codemix.cli import main


def test_presets_table(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == [
        "name",
        "layers",
        "width",
        "heads",
        "d_ff",
        "params",
        "non-emb",
        "FLOPs/token",
    ]
    row = next(line.split() for line in lines if line.startswith("124M"))
    assert row[:5] == ["124M", "12", "768", "12", "2048"]
    assert row[6] == "85M" and row[7] == "6.61e+08"
    assert "vocab 8192" in out and "context 1024" in out


def test_presets_options(capsys):
    assert main(["presets", "--vocab", "50257", "--seq-len", "2048", "--untied"]) == 0
    out = capsys.readouterr().out
    assert "vocab 50257, untied embeddings, context 2048 tokens" in out


def test_module_load_imports_no_jax():
    code = "import sys, codemix.cli.presets; assert 'jax' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_vocabulary_or_context_of_zero_is_refused_by_its_flag(capsys):
    for flag in ("--vocab", "--seq-len"):
        try:
            rc = main(["presets", flag, "0"])
        except SystemExit as e:  # argparse refuses the value itself
            rc = e.code
        assert rc == 2
        assert f"argument {flag}: must be at least 1, got 0" in capsys.readouterr().err
