"""Results tables: reading, joining, column selection and validation."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from codemix.analysis.tables import (
    join_tables,
    load_results,
    read_table,
    resolve_columns,
    stage_mixtures,
    table_columns,
    trial_keys,
    usable_rows,
)
from codemix.core.errors import CodemixError


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
    with pytest.raises(CodemixError, match="b.csv has no column 'index'.*--stack"):
        join_tables([tmp_path / "a.csv", tmp_path / "b.csv"])


def test_stacking_keeps_every_row_and_leaves_missing_columns_empty(tmp_path):
    ladder = _mixture_frame().with_columns(loss=pl.lit(1.0))
    arm = _mixture_frame().head(3).with_columns(loss=pl.lit(2), **{"tokens.cooldown": pl.lit(5)})
    ladder.write_csv(tmp_path / "ladder.csv")
    arm.write_csv(tmp_path / "arm.csv")
    df = join_tables([tmp_path / "ladder.csv", tmp_path / "arm.csv"], on=None)
    assert df.height == 11 and df["tokens.cooldown"].null_count() == 8
    t = load_results([tmp_path / "ladder.csv", tmp_path / "arm.csv"], "w_*", ["loss"], on=None)
    assert t.n_runs == 11 and t.metric("loss").tolist() == [1.0] * 8 + [2.0] * 3
    pl.DataFrame({"w_text": ["a"], "w_code": [0.5], "w_math": [0.5]}).write_csv(tmp_path / "x.csv")
    with pytest.raises(CodemixError, match="'w_text' is not numeric"):  # text beside numbers
        load_results([tmp_path / "ladder.csv", tmp_path / "x.csv"], "w_*", ["loss"], on=None)


def test_one_mixture_per_stage(tmp_path):
    rng = np.random.default_rng(3)
    a, b, c = rng.dirichlet([1, 1], 10), rng.dirichlet([1, 1, 1], 10), rng.dirichlet([1, 1], 10)
    df = pl.DataFrame(
        {
            "mix.init.text": a[:, 0],
            "mix.init.code": a[:, 1],
            "mix.init_late.text": c[:, 0],  # a stage whose name starts like another's
            "mix.init_late.code": c[:, 1],
            "mix.cool.text": b[:, 0],
            "mix.cool.code": b[:, 1],
            "mix.cool.math": b[:, 2],
            "loss": rng.uniform(2, 3, 10),
        }
    )
    p = tmp_path / "r.csv"
    df.write_csv(p)
    t = load_results(p, ["mix.init.*", "mix.cool.*"], ["loss"])
    assert t.groups == (2, 3) and t.weights.shape == (10, 5)
    assert t.mixture_cols[:2] == ("mix.init.text", "mix.init.code")  # not init_late's
    assert load_results(p, ["mix.init.*"], ["loss"]).groups is None
    with pytest.raises(CodemixError, match="once per stage"):
        load_results(p, "mix.*", ["loss"])
    shares = df.with_columns(
        code_frac__init=df["mix.init.code"], code_frac__cool=df["mix.cool.code"]
    )
    shares = shares.rename(
        {"code_frac__init": "code_frac.init", "code_frac__cool": "code_frac.cool"}
    )
    shares.write_csv(p)
    hint = (
        r"each one stage's code share.* --mixture-cols 'mix.init.\*' --mixture-cols 'mix.cool.\*'"
    )
    with pytest.raises(CodemixError, match=hint):
        load_results(p, "code_frac.init,code_frac.cool", ["loss"])
    with pytest.raises(CodemixError, match="more than one mixture group"):
        load_results(p, ["mix.init.*", "mix.init.code,mix.cool.*"], ["loss"])
    with pytest.raises(CodemixError, match="one column"):
        load_results(p, ["mix.init.*,mix.cool.text,mix.cool.code", "mix.cool.math"], ["loss"])
    free = load_results(p, ["mix.init.*"], ["loss"], stage_cols="mix.cool.math")
    assert free.groups == (2, 1) and free.mixture_cols[-1] == "mix.cool.math"
    with pytest.raises(CodemixError, match="both mixture and stage"):
        load_results(p, ["mix.init.*"], ["loss"], stage_cols="mix.init.code")
    df.with_columns(pl.col("mix.cool.math") + 0.5).write_csv(p)
    with pytest.raises(CodemixError, match="columns mix.cool.text, mix.cool.code, mix.cool.math"):
        load_results(p, ["mix.init.*", "mix.cool.*"], ["loss"])


def _export_frame() -> pl.DataFrame:
    """Eight rows of a study export: trial states and run statuses of every kind."""
    return _mixture_frame().with_columns(
        trial=pl.Series([0, 0, 1, 1, 2, 3, 4, 5]),
        state=pl.Series(
            ["complete", "complete", "pruned", "fail", "fail", "running", "complete", "COMPLETE"]
        ),
        run_status=pl.Series(
            [
                "completed",
                "failed",
                "completed",
                "completed",
                "failed",
                "completed",
                "completed",
                None,
            ]
        ),
        loss=pl.Series([2.0, None, 2.1, 2.2, None, 2.3, 2.4, 2.5]),
    )


def test_usable_rows_of_a_study_export():
    keep, left_out = usable_rows(_export_frame())
    # row 3: a failed trial's completed run; row 7: a complete trial's run without a status
    assert keep.tolist() == [True, False, True, False, False, False, True, False]
    assert left_out == {
        "of failed trials": 2,
        "of running trials": 1,
        "failed runs": 1,
        "runs without a status": 1,
    }
    assert list(left_out)[:2] == ["of failed trials", "of running trials"]  # trials first
    keep, left_out = usable_rows(_export_frame().drop("state"))
    assert keep.tolist() == [True, False, True, True, False, True, True, False]
    assert left_out == {"failed runs": 2, "runs without a status": 1}
    keep, left_out = usable_rows(_mixture_frame())  # RegMix-like: no such columns
    assert keep.all() and left_out == {}


def test_load_results_leaves_out_unusable_rows_and_says_so(tmp_path):
    p = tmp_path / "export.csv"
    _export_frame().write_csv(p)
    t = load_results(p, "w_*", ["loss"])
    np.testing.assert_allclose(t.metric("loss"), [2.0, 2.1, 2.4])
    assert t.left_out_line() == (
        "left out 5 of 8 rows: 2 of failed trials, 1 of running trials, 1 failed run, "
        "1 runs without a status"
    )
    assert t.summary()["rows_left_out"]["of failed trials"] == 2
    plain = tmp_path / "plain.csv"
    _mixture_frame().with_columns(loss=pl.lit(1.0)).write_csv(plain)
    untouched = load_results(plain, "w_*", ["loss"])
    assert untouched.n_runs == 8 and untouched.left_out_line() == ""
    assert "rows_left_out" not in untouched.summary()


def test_load_results_reads_the_vocabulary_and_code_domains_of_the_runs(tmp_path):
    p = tmp_path / "export.csv"
    df = _export_frame().with_columns(
        params=pl.lit(4e5), vocab_size=pl.lit(4096), code_domains=pl.lit("web_code,hq_code")
    )
    df.write_csv(p)
    t = load_results(p, "w_*", ["loss"], size_col="param*")
    assert t.size_col == "params"  # the column itself, not the selection
    assert (t.vocab_size, t.code_domains) == (4096, ("web_code", "hq_code"))
    # only the rows used count: a failed trial's other vocabulary does not matter
    df.with_columns(
        vocab_size=pl.when(pl.col("state") == "fail").then(512).otherwise(4096)
    ).write_csv(p)
    assert load_results(p, "w_*", ["loss"]).vocab_size == 4096
    # several vocabularies, or none recorded: no one value describes the runs
    df.with_columns(vocab_size=pl.Series([4096, 0, 512, 0, 0, 0, 4096, 0])).write_csv(p)
    assert load_results(p, "w_*", ["loss"]).vocab_size is None
    df.with_columns(code_domains=pl.lit("")).write_csv(p)
    assert load_results(p, "w_*", ["loss"]).code_domains is None
    _mixture_frame().with_columns(loss=pl.lit(1.0)).write_csv(p)  # another tool's table
    plain = load_results(p, "w_*", ["loss"])
    assert (plain.vocab_size, plain.code_domains) == (None, None)


def test_errors_name_rows_as_in_the_file_after_leaving_some_out(tmp_path):
    df = _export_frame()
    bad = df.with_columns(
        pl.when(pl.col("index") == 6).then(0.9).otherwise(pl.col("w_text")).alias("w_text")
    )
    p = tmp_path / "export.csv"
    bad.write_csv(p)
    with pytest.raises(CodemixError, match="row 6 sum to"):  # the third row kept
        load_results(p, "w_*", ["loss"])
    df.with_columns(state=pl.lit("fail")).write_csv(p)
    with pytest.raises(CodemixError, match=r"export\.csv: none of its 8 rows is usable \(8 of fa"):
        load_results(p, "w_*", ["loss"])


def test_trial_keys_tell_capped_arms_of_one_grid_apart():
    grid = pl.DataFrame({"param.stages.init.code_frac": [0.1, 0.3], "bpb.text": [1.0, 2.0]})
    capped = grid.with_columns(pl.lit(2e6).alias("unique_tokens.text"))
    stacked = pl.concat([grid, capped, grid], how="diagonal_relaxed")
    keys = trial_keys(stacked)
    assert keys[0] == keys[4] and keys[1] == keys[5]  # a second seed of the full store
    assert len({keys[0], keys[2]}) == 2  # the same trial values, another arm
    assert trial_keys(pl.DataFrame({"unique_tokens.text": [1.0]})) is None


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_table_columns_reads_the_header_alone(tmp_path, suffix):
    df = pl.DataFrame({"mix.init.text": [0.7, 0.5], "bpb.text": [1.3, 1.2], "note": ["a", "b"]})
    path = tmp_path / f"t{suffix}"
    df.write_csv(path) if suffix == ".csv" else df.write_parquet(path)
    assert table_columns(path) == df.columns
    assert stage_mixtures(table_columns(path)) == ["mix.init.*"]
    with pytest.raises(CodemixError, match="does not exist"):
        table_columns(tmp_path / "missing.csv")
