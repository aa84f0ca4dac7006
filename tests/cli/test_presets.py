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


def test_bad_vocab_is_a_clean_error(capsys):
    assert main(["presets", "--vocab", "0"]) == 2
    assert "vocab_size" in capsys.readouterr().err


def test_module_load_imports_no_jax():
    code = "import sys, codemix.cli.presets; assert 'jax' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
