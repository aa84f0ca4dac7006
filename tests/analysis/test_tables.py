"""Results tables: reading, joining, column selection and validation."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from analysis.tables import join_tables, load_results, read_table, resolve_columns
from codemix.errors import CodemixError


def _mixture_frame(n: int = 8, seed: int = 0) -> pl.DataFrame:
    w = np.random.default_rng(seed).dirichlet([1, 1, 1], n)
    return pl.DataFrame(
        {"index": np.arange(n), "w_text": w[:, 0], "w_code": w[:, 1], "w_math": w[:, 2]}
    )


def test_resolve_prefix_and_names():
    cols = ["index", "w_text", "w_code", "loss"]
    assert resolve_columns("w_*", cols) == ["w_text", "w_code"]
    assert resolve_columns("loss, w_code", cols) == ["loss", "w_code"]
    assert resolve_columns(["w_*", "w_text"], cols) == ["w_text", "w_code"]
    with pytest.raises(CodemixError, match="starting with 'x_'"):
        resolve_columns("x_*", cols, "t.csv")
    with pytest.raises(CodemixError, match="t.csv has no column 'nope'"):
        resolve_columns("nope", cols, "t.csv")


def test_csv_and_parquet_read_alike(tmp_path):
    df = _mixture_frame().with_columns(loss=pl.lit(1.5))
    df.write_csv(tmp_path / "r.csv")
    df.write_parquet(tmp_path / "r.parquet")
    a = load_results(tmp_path / "r.csv", "w_*", ["loss"])
    b = load_results(tmp_path / "r.parquet", "w_*", ["loss"])
    assert a.mixture_cols == ("w_text", "w_code", "w_math")
    np.testing.assert_allclose(a.weights, b.weights)
    assert a.n_runs == 8


def test_join_on_index_like_regmix(tmp_path):
    mix = _mixture_frame()
    loss = pl.DataFrame({"index": np.arange(8)[::-1], "metric/loss": np.arange(8.0)[::-1]})
    mix.write_csv(tmp_path / "mix.csv")
    loss.write_csv(tmp_path / "loss.csv")
    t = load_results([tmp_path / "mix.csv", tmp_path / "loss.csv"], "w_*", ["metric/*"])
    assert t.metric_cols == ("metric/loss",)
    np.testing.assert_allclose(t.metric("metric/loss"), np.arange(8.0))


def test_errors_name_file_column_and_row(tmp_path):
    df = _mixture_frame().with_columns(loss=pl.lit(1.0), name=pl.lit("a"))
    p = tmp_path / "r.csv"
    df.write_csv(p)
    with pytest.raises(CodemixError, match="does not exist"):
        read_table(tmp_path / "missing.csv")
    with pytest.raises(CodemixError, match=r"r\.csv has no column 'acc'"):
        load_results(p, "w_*", ["acc"])
    with pytest.raises(CodemixError, match="'name' is not numeric"):
        load_results(p, "w_*", ["name"])
    bad = df.with_columns(
        pl.when(pl.col("index") == 3).then(0.9).otherwise(pl.col("w_text")).alias("w_text")
    )
    bad.write_csv(p)
    with pytest.raises(CodemixError, match="row 3 sum to"):
        load_results(p, "w_*", ["loss"])
    df.head(0).write_csv(tmp_path / "empty.csv")
    with pytest.raises(CodemixError, match="no rows"):
        read_table(tmp_path / "empty.csv")


def test_join_without_key_is_an_error(tmp_path):
    _mixture_frame().write_csv(tmp_path / "a.csv")
    pl.DataFrame({"run": [0], "loss": [1.0]}).write_csv(tmp_path / "b.csv")
    with pytest.raises(CodemixError, match="b.csv has no column 'index'"):
        join_tables([tmp_path / "a.csv", tmp_path / "b.csv"])


def test_one_mixture_per_stage(tmp_path):
    rng = np.random.default_rng(3)
    a, b = rng.dirichlet([1, 1], 10), rng.dirichlet([1, 1, 1], 10)
    df = pl.DataFrame(
        {
            "mix_init_text": a[:, 0],
            "mix_init_code": a[:, 1],
            "mix_cool_text": b[:, 0],
            "mix_cool_code": b[:, 1],
            "mix_cool_math": b[:, 2],
            "loss": rng.uniform(2, 3, 10),
        }
    )
    p = tmp_path / "r.csv"
    df.write_csv(p)
    t = load_results(p, ["mix_init_*", "mix_cool_*"], ["loss"])
    assert t.groups == (2, 3) and t.weights.shape == (10, 5)
    assert load_results(p, ["mix_init_*"], ["loss"]).groups is None
    with pytest.raises(CodemixError, match="once per stage"):
        load_results(p, "mix_*", ["loss"])
    with pytest.raises(CodemixError, match="more than one mixture group"):
        load_results(p, ["mix_init_*", "mix_init_code,mix_cool_*"], ["loss"])
    with pytest.raises(CodemixError, match="one column"):
        load_results(p, ["mix_init_*,mix_cool_text,mix_cool_code", "mix_cool_math"], ["loss"])
    free = load_results(p, ["mix_init_*"], ["loss"], stage_cols="mix_cool_math")
    assert free.groups == (2, 1) and free.mixture_cols[-1] == "mix_cool_math"
    with pytest.raises(CodemixError, match="both mixture and stage"):
        load_results(p, ["mix_init_*"], ["loss"], stage_cols="mix_init_code")
    df.with_columns(mix_cool_math=pl.col("mix_cool_math") + 0.5).write_csv(p)
    with pytest.raises(CodemixError, match="columns mix_cool_text, mix_cool_code, mix_cool_math"):
        load_results(p, ["mix_init_*", "mix_cool_*"], ["loss"])
