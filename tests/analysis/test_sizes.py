"""Target sizes: a preset counts as the fit's size column does, at the fit's vocabulary."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from codemix.analysis.fit import fit_results
from codemix.analysis.fitfile import FitFile, load_fit, save_fit
from codemix.analysis.sizes import resolve_size, sci
from codemix.analysis.surfaces import SurfaceConfig
from codemix.analysis.tables import load_results
from codemix.core.errors import CodemixError
from codemix.models.accounting import param_count
from codemix.models.presets import model_config


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A study export's columns at two sizes, vocabulary 4096."""
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, 24)
    n = np.repeat([4e5, 9e5], 12)
    df = pl.DataFrame(
        {
            "mix.init.text": 1 - a,
            "mix.init.code": a,
            "params": n,
            "non_embedding_params": n / 2,
            "N": n,
            "vocab_size": 4096,
            "bpb.text": 2 + 0.3 * a + rng.normal(0, 0.01, 24),
        }
    )
    path = tmp_path_factory.mktemp("sizes") / "export.csv"
    df.write_csv(path)
    return path


def _fit(path, size_col, tmp_path) -> FitFile:
    table = load_results(path, "mix.init.*", ["bpb.text"], size_col)
    fit = fit_results(table, SurfaceConfig(families=("linear",), stack=False))
    save_fit(fit, tmp_path / "fit.json")  # what FIT.json keeps is what resolves
    return load_fit(tmp_path / "fit.json")


def _preset(name: str):
    return param_count(model_config(name, vocab_size=4096, seq_len=1024))


def test_a_fit_on_params_counts_the_preset_in_total(export, tmp_path):
    fit = _fit(export, "params", tmp_path)
    assert (fit.size_col, fit.vocab_size) == ("params", 4096)
    size = resolve_size("470M", fit)
    assert size.count == _preset("470M").total and size.preset == "470M"
    assert size.count == pytest.approx(3.08e8, rel=1e-3)  # not 4.7e8
    assert str(resolve_size("2.8B", fit)) == (
        "2.8B (2.53e9 parameters: the preset at vocabulary 4096, total)"
    )
    assert resolve_size("2.8b", fit).count == _preset("2.8B").total  # any case


def test_a_fit_on_non_embedding_params_counts_the_preset_without_embeddings(export, tmp_path):
    fit = _fit(export, "non_embedding_params", tmp_path)
    size = resolve_size("470M", fit)
    assert size.count == _preset("470M").non_embedding
    assert str(size).endswith("the preset at vocabulary 4096, non-embedding)")


def test_a_plain_count_stays_as_given(export, tmp_path):
    for fit in (_fit(export, "params", tmp_path), _fit(export, "N", tmp_path), FitFile((), {})):
        assert resolve_size("300M", fit).count == 3e8  # no preset has that name
        assert resolve_size("1.2e9", fit).count == 1.2e9
        assert resolve_size(2.5e9, fit).count == 2.5e9
        assert str(resolve_size("3e8", fit)) == "3e8 parameters"
    with pytest.raises(CodemixError, match="--size: cannot read 'lots'"):
        resolve_size("lots", FitFile((), {}), "--size")
    with pytest.raises(CodemixError, match="--target 0: a model size must be more than 0"):
        resolve_size("0", FitFile((), {}), "--target")


def test_a_fit_on_another_column_refuses_a_preset(export, tmp_path):
    fit = _fit(export, "N", tmp_path)
    with pytest.raises(CodemixError, match="--target 470M names a preset") as e:
        resolve_size("470M", fit, "--target")
    assert "column 'N'" in str(e.value) and "give a count (e.g. --target 2.5e9)" in str(e.value)
    # a fit that records no vocabulary (an older FIT.json, or another tool's table)
    old = FitFile(("a", "b"), {}, size_col="params")
    with pytest.raises(CodemixError, match="records no vocabulary"):
        resolve_size("2.8B", old)


def test_sci():
    assert (sci(2532477440.0), sci(3.08e8), sci(5e5)) == ("2.53e9", "3.08e8", "5e5")
    assert sci(42.0) == "42"
