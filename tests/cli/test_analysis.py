"""The fit / predict / scaling / optimum commands on small generated tables."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import polars as pl
import pytest

from codemix.cli import main
from codemix.models.accounting import param_count
from codemix.models.presets import model_config


@pytest.fixture(scope="module")
def ladder(tmp_path_factory):
    """Runs at 4 sizes on 3-domain mixtures from a known joint law, plus a FIT.json of it
    (on params at vocabulary 4096, so presets are targets)."""
    d = tmp_path_factory.mktemp("ladder")
    rng = np.random.default_rng(0)
    frames = []
    for n in (1e6, 4e6, 1.6e7, 6.4e7):
        w = rng.dirichlet([1, 1, 1], 16)
        nl = np.exp(w @ [0.6, 1.0, 0.9]) + np.exp(w @ [4.5, 3.8, 4.0]) * n**-0.3
        code = np.exp(w @ [0.9, 0.3, 0.7]) + np.exp(w @ [4.0, 4.6, 4.2]) * n**-0.3
        noise = np.exp(0.005 * rng.standard_normal((2, 16)))
        frames.append(
            pl.DataFrame(
                {
                    "w_text": w[:, 0],
                    "w_code": w[:, 1],
                    "w_math": w[:, 2],
                    "params": n,
                    "vocab_size": 4096,
                    "nl_loss": nl * noise[0],
                    "code_loss": code * noise[1],
                }
            )
        )
    table = d / "ladder.csv"
    pl.concat(frames).write_csv(table)
    fit = d / "FIT.json"
    rc = main(
        [
            "fit",
            str(table),
            "--mixture-cols",
            "w_*",
            "--metric",
            "nl_loss",
            "--metric",
            "code_loss",
            "--size-col",
            "params",
            "--families",
            "linear,exp",
            "--n-boot",
            "10",
            "-o",
            str(fit),
        ]
    )
    assert rc == 0
    return table, fit


def test_fit_writes_a_self_describing_file(ladder):
    _, fit = ladder
    d = json.loads(fit.read_text())
    assert d["format"] == "codemix.fit" and d["version"] == 1
    assert d["mixture_cols"] == ["w_text", "w_code", "w_math"]
    s = d["surfaces"]["nl_loss"]
    assert s["family"] in ("linear", "exp")
    assert {c["family"] for c in s["cv"]} == {"linear", "exp"}
    assert d["scaling"]["nl_loss"]["alpha"] == pytest.approx(0.3, abs=0.05)


def test_fit_calibrates_intervals_unless_raw_asked(ladder, tmp_path):
    table, fit = ladder
    cal = json.loads(fit.read_text())["surfaces"]["nl_loss"]
    chosen = next(c for c in cal["cv"] if c["family"] == cal["family"])
    assert cal["interval_scale"] == chosen["interval_scale"] != 1.0
    raw = tmp_path / "raw.json"
    args = ["fit", str(table), "--mixture-cols", "w_*", "--metric", "nl_loss"]
    args += ["--families", "linear", "--n-boot", "10", "--raw-intervals", "-o", str(raw)]
    assert main(args) == 0
    assert json.loads(raw.read_text())["surfaces"]["nl_loss"]["interval_scale"] == 1.0


def test_predict_one_row_per_input_with_bounds(ladder, tmp_path):
    table, fit = ladder
    out = tmp_path / "pred.csv"
    assert (
        main(["predict", str(fit), "--mixtures", str(table), "--size", "470M", "-o", str(out)]) == 0
    )
    p = pl.read_csv(out)
    assert p.height == 64
    # the table holds observed nl_loss too: the predictions sit beside it under their own name
    assert p["nl_loss"].equals(pl.read_csv(table)["nl_loss"])
    pred, lo, hi = (p[f"predicted_nl_loss{s}"] for s in ("", "_lo90", "_hi90"))
    assert (lo <= pred).all() and (pred <= hi).all()
    w = p.select("w_text", "w_code", "w_math").to_numpy()
    n = param_count(model_config("470M", vocab_size=4096, seq_len=1024)).total  # 3.08e8
    truth = np.exp(w @ [0.6, 1.0, 0.9]) + np.exp(w @ [4.5, 3.8, 4.0]) * n**-0.3
    np.testing.assert_allclose(pred.to_numpy(), truth, rtol=0.03)
    # fresh mixtures (no observed metric) keep the plain names
    pl.DataFrame({"w_text": [0.5], "w_code": [0.3], "w_math": [0.2]}).write_csv(out)
    assert main(["predict", str(fit), "--mixtures", str(out), "-o", str(out)]) == 0
    assert {"nl_loss", "nl_loss_lo90", "code_loss_hi90"} <= set(pl.read_csv(out).columns)


def test_a_preset_target_resolves_at_the_fits_vocabulary(ladder, tmp_path, capsys):
    table, fit = ladder
    out = tmp_path / "pred.csv"
    argv = ["predict", str(fit), "--mixtures", str(table), "-o", str(out)]
    assert main([*argv, "--size", "470M"]) == 0
    assert (
        "wrote 64 predictions at 470M (3.08e8 parameters: the preset at vocabulary 4096, "
        f"total), from the size law to {out}\n"
    ) in capsys.readouterr().out
    assert main([*argv, "--size", "4.7e8"]) == 0  # a count stays a count
    assert "at 4.7e8 parameters, from the size law" in capsys.readouterr().out
    # a fit whose sizes come from another column cannot place a preset
    other, n_fit = tmp_path / "n.csv", tmp_path / "n.json"
    pl.read_csv(table).rename({"params": "N"}).write_csv(other)
    argv = ["fit", str(other), "--mixture-cols", "w_*", "--metric", "nl_loss", "--size-col", "N"]
    assert main([*argv, "--families", "linear", "--n-boot", "2", "-o", str(n_fit)]) == 0
    argv = ["predict", str(n_fit), "--mixtures", str(table), "-o", str(out)]
    assert main([*argv, "--size", "470M"]) == 2
    err = capsys.readouterr().err
    assert "--size 470M names a preset" in err and "column 'N'" in err
    assert main([*argv, "--size", "3.08e8"]) == 0


def test_predict_at_each_rows_size_scores_observed_runs(ladder, tmp_path, capsys):
    table, fit = ladder
    out = tmp_path / "confirm.csv"
    argv = ["predict", str(fit), "--mixtures", str(table), "--size-col", "params"]
    assert main([*argv, "-o", str(out)]) == 0
    p = pl.read_csv(out)
    w = p.select("w_text", "w_code", "w_math").to_numpy()
    n = p["params"].to_numpy()
    truth = np.exp(w @ [0.6, 1.0, 0.9]) + np.exp(w @ [4.5, 3.8, 4.0]) * n**-0.3
    np.testing.assert_allclose(p["predicted_nl_loss"].to_numpy(), truth, rtol=0.02)
    text = capsys.readouterr().out
    assert "at each row's params" in text and "of 64 inside the 90 % interval" in text
    assert main([*argv, "--size", "1B", "-o", str(out)]) == 2
    assert "not both" in capsys.readouterr().err


def test_optimum_prints_mixture_interval_and_front(ladder, capsys):
    _, fit = ladder
    assert (
        main(
            [
                "optimum",
                str(fit),
                "--objective",
                "min:nl_loss,code_loss<=2.6",
                "--target",
                "2.8B",
                "--candidates",
                "500",
                "--draws",
                "20",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert (
        "optimum for min:nl_loss,code_loss<=2.6 at 2.8B (2.53e9 parameters: the preset at "
        "vocabulary 4096, total); 500 candidate mixtures"
    ) in out
    assert "predicted nl_loss at 2.8B: " in out and "Pareto front at 2.8B (" in out
    assert "argmax 90 % interval" in out and "Pareto front" in out


def test_optimum_says_when_it_lies_at_the_edge_the_study_explored(tmp_path, capsys):
    """init's code share searched over 10-40 % only, and the loss falls with it"""
    rng = np.random.default_rng(3)
    init, cool = rng.uniform(0.1, 0.4, 24), rng.uniform(0.0, 1.0, 24)
    loss = 3.0 - 0.5 * init + 0.2 * (cool - 0.5) ** 2 + 0.003 * rng.standard_normal(24)
    mix = {"mix.init.text": 1 - init, "mix.init.code": init}
    mix |= {"mix.cool.text": 1 - cool, "mix.cool.code": cool}
    table, fit = tmp_path / "runs.csv", tmp_path / "fit.json"
    pl.DataFrame(mix | {"loss": loss}).write_csv(table)
    cols = ["--mixture-cols", "mix.init.*", "--mixture-cols", "mix.cool.*"]
    argv = ["fit", str(table), *cols, "--metric", "loss", "--families", "linear", "-o", str(fit)]
    assert main([*argv, "--code-domains", "code"]) == 0
    capsys.readouterr()
    assert main(["optimum", str(fit), "--objective", "min:loss", "--draws", "20"]) == 0
    out = capsys.readouterr().out
    assert "note: the optimum lies at the edge of the explored range for init: explore" in out
    assert main(["optimum", str(fit), "--objective", "min:loss", "--full-simplex"]) == 0
    assert "edge of the explored range" not in capsys.readouterr().out


def test_scaling_prints_parameters_with_errors(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n = np.repeat(np.geomspace(5e7, 5e9, 6), 6)
    d = n * np.tile(np.geomspace(5, 100, 6), 6)
    loss = (1.7 + 400 / n**0.34 + 1500 / d**0.3) * np.exp(0.005 * rng.standard_normal(len(n)))
    data = tmp_path / "runs.csv"
    pl.DataFrame({"N": n, "C": 6 * n * d, "loss": loss}).write_csv(data)
    out = tmp_path / "law.json"
    assert (
        main(
            [
                "scaling",
                str(data),
                "--form",
                "chinchilla",
                "--params-col",
                "N",
                "--flops-col",
                "C",
                "--loss-col",
                "loss",
                "--n-boot",
                "10",
                "--refine-starts",
                "20",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    for k in ("E", "A", "B", "alpha", "beta"):
        assert f"  {k} " in text
    assert "bootstrap SE" in text
    assert json.loads(out.read_text())["params"]["E"] == pytest.approx(1.7, abs=0.2)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fit", "{missing}", "--mixture-cols", "w_*", "--metric", "nl_loss"], "does not exist"),
        (["fit", "{table}", "--mixture-cols", "w_*", "--metric", "acc"], "no column 'acc'"),
        (["fit", "{table}", "--mixture-cols", "x_*", "--metric", "nl_loss"], "starting with"),
        (["fit", "{empty}", "--mixture-cols", "w_*", "--metric", "nl_loss"], "no rows"),
        (["fit", "{table}", "--mixture-cols", "w_*", "--metric", "name"], "not numeric"),
        (["fit", "{table}", "--mixture-cols", "w_text,w_code", "--metric", "nl_loss"], "sum to"),
        (["predict", "{fit}", "--mixtures", "{table}", "--size", "lots"], "cannot read"),
        (["predict", "{table}", "--mixtures", "{table}"], "not valid JSON"),
        (["optimum", "{fit}", "--objective", "best:nl_loss"], "unknown objective"),
        (["optimum", "{fit}", "--objective", "min:acc"], "the fit has"),
        (["report", "{fit}"], "a fit file goes with --fit, beside the runs"),
    ],
)
def test_bad_input_is_a_clean_error_and_keeps_the_output(ladder, tmp_path, capsys, argv, message):
    table, fit = ladder
    named = tmp_path / "named.csv"
    pl.read_csv(table).with_columns(name=pl.lit("x")).write_csv(named)
    empty = tmp_path / "empty.csv"
    pl.read_csv(table).head(0).write_csv(empty)
    paths = {
        "missing": tmp_path / "nope.csv",
        "empty": empty,
        "fit": fit,
        "table": named if "name" in argv else table,
    }
    out = tmp_path / "out.txt"
    out.write_text("keep me")
    argv = [a.format(**paths) for a in argv]
    if argv[0] != "optimum":
        argv += ["-o", str(out)]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert out.read_text() == "keep me"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fit", "--folds", "1"], "argument --folds: must be at least 2, got 1"),
        (["fit", "--n-boot", "-1"], "argument --n-boot: must be at least 0, got -1"),
        (["predict", "--level", "0"], "argument --level: 0.0 is not a share strictly between"),
        (["optimum", "--candidates", "0"], "argument --candidates: must be at least 1, got 0"),
        (["optimum", "--candidates", "2.5"], "argument --candidates: '2.5' is not an integer"),
        (["optimum", "--draws", "-1"], "argument --draws: must be at least 0, got -1"),
        (["optimum", "--level", "90"], "argument --level: 90.0 is not a share strictly between"),
        (["optimum", "--target", "0"], "--target 0: a model size must be more than 0 parameters"),
        (["predict", "--size", "0"], "--size 0: a model size must be more than 0 parameters"),
    ],
)
def test_counts_levels_and_sizes_out_of_range_are_refused_by_name(
    ladder, tmp_path, capsys, args, message
):
    """Refused by the flag's name, before any work: unchecked, --candidates 0, --draws -1 and
    --level 1.5 end in a numpy traceback, and --target 0 in an error about tokens."""
    table, fit = ladder
    out = tmp_path / "out.txt"
    out.write_text("keep me")
    command, more = args[0], args[1:]
    argv = {
        "fit": ["fit", str(table), "--mixture-cols", "w_*", "--metric", "nl_loss", "-o", str(out)],
        "predict": ["predict", str(fit), "--mixtures", str(table), "-o", str(out)],
        "optimum": ["optimum", str(fit), "--objective", "min:nl_loss"],
    }[command]
    try:
        rc = main(argv + more)
    except SystemExit as e:  # argparse refuses a flag's value itself
        rc = e.code
    assert rc == 2
    assert message in capsys.readouterr().err
    assert out.read_text() == "keep me"


def test_stage_mixtures_fit_predict_and_optimum(tmp_path, capsys):
    """One --mixture-cols per stage: each stage's weights are a mixture of their own."""
    rng = np.random.default_rng(5)
    frames = []
    for n in (1e6, 4e6, 1.6e7):
        a, c = rng.uniform(0, 1, 20), rng.uniform(0, 0.6, 20)
        x = np.c_[1 - a, a, c]
        frames.append(
            pl.DataFrame(
                {
                    "mix.init.text": 1 - a,
                    "mix.init.code": a,
                    "mix.cooldown.text": 1 - c,
                    "mix.cooldown.code": c,
                    "params": n,
                    "vocab_size": 4096,
                    "bpb.text": np.exp(x @ [0.5, 1.0, -0.3]) + np.exp(x @ [4, 4.6, -0.2]) * n**-0.3,
                    "bpb.code": np.exp(x @ [1.0, 0.3, -0.1]) + np.exp(x @ [4.4, 3.8, 0]) * n**-0.3,
                }
            )
        )
    table, fit = tmp_path / "runs.csv", tmp_path / "fit.json"
    pl.concat(frames).write_csv(table)
    argv = ["fit", str(table), "--mixture-cols", "mix.init.*", "--mixture-cols", "mix.cooldown.*"]
    argv += ["--metric", "bpb.*", "--size-col", "params", "--families", "linear,exp"]
    assert main([*argv, "--n-boot", "10", "--jobs", "0", "-o", str(fit)]) == 2
    assert "--jobs must be at least 1, got 0" in capsys.readouterr().err
    assert not fit.exists()
    assert main([*argv, "--n-boot", "10", "-o", str(fit)]) == 0
    d = json.loads(fit.read_text())
    assert d["mixture_groups"] == [
        ["mix.init.text", "mix.init.code"],
        ["mix.cooldown.text", "mix.cooldown.code"],
    ]
    pred = tmp_path / "pred.csv"
    assert (
        main(["predict", str(fit), "--mixtures", str(table), "--size", "2.8B", "-o", str(pred)])
        == 0
    )
    assert pl.read_csv(pred).height == 60
    bad = tmp_path / "bad.csv"
    pl.read_csv(table).with_columns(pl.lit(0.9).alias("mix.cooldown.code")).write_csv(bad)
    assert main(["predict", str(fit), "--mixtures", str(bad), "-o", str(pred)]) == 2
    assert "mix.cooldown.text, mix.cooldown.code" in capsys.readouterr().err
    argv = ["optimum", str(fit), "--objective", "min:bpb.text,bpb.code<=3.0", "--target", "2.8B"]
    assert main([*argv, "--candidates", "400", "--draws", "10"]) == 0
    out = capsys.readouterr().out
    assert "within the runs' weight ranges" in out
    assert "mix.init.text, mix.init.code | mix.cooldown.text, mix.cooldown.code" in out
    # the cooldown's code share as a free stage variable instead of a second mixture
    argv = ["fit", str(table), "--mixture-cols", "mix.init.*", "--stage-cols", "mix.cooldown.code"]
    argv += ["--metric", "bpb.text", "--size-col", "params", "--families", "linear,exp"]
    assert main([*argv, "--n-boot", "10", "-o", str(fit)]) == 0
    assert json.loads(fit.read_text())["mixture_groups"][-1] == ["mix.cooldown.code"]
    argv = ["optimum", str(fit), "--objective", "weighted:bpb.text=1", "--target", "2.8B"]
    assert main([*argv, "--candidates", "400", "--draws", "10", "--full-simplex"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "mix.cooldown.code" in x)
    assert 0.0 <= float(line.split()[1]) <= 0.6  # a free variable stays within its range


def _fit_argv(table, out, *extra):
    return [
        "fit",
        str(table),
        "--mixture-cols",
        "w_*",
        "--metric",
        "nl_loss",
        *extra,
        "-o",
        str(out),
    ]


def test_fit_leaves_out_rows_of_failed_trials_and_runs(ladder, tmp_path, capsys):
    table, _ = ladder
    df = pl.read_csv(table).head(16)  # one size
    export = df.with_columns(
        trial=pl.Series(range(16)),
        state=pl.Series(["fail"] * 3 + ["pruned"] * 2 + ["complete"] * 11),
        run_status=pl.Series(["completed"] * 14 + ["failed"] * 2),
        # a failed run has no metric; a failed trial's may be anything
        nl_loss=pl.Series([None, 1e9, 1.0, *df["nl_loss"][3:14], None, None]),
    )
    path, fit = tmp_path / "export.csv", tmp_path / "fit.json"
    export.write_csv(path)
    assert main(_fit_argv(path, fit, "--families", "linear")) == 0
    out = capsys.readouterr().out
    assert "left out 5 of 16 rows: 3 of failed trials, 2 failed runs\n" in out
    d = json.loads(fit.read_text())
    assert d["data"]["n_runs"] == 11 and d["surfaces"]["nl_loss"]["n_train"] == 11
    assert main(_fit_argv(table, fit, "--families", "linear")) == 0
    assert "left out" not in capsys.readouterr().out  # a table without the columns: all rows
    export.with_columns(run_status=pl.lit("failed")).write_csv(path)
    assert main(_fit_argv(path, fit, "--families", "linear")) == 2
    assert "none of its 16 rows is usable (3 of failed trials, 13 failed runs)" in (
        capsys.readouterr().err
    )


def test_fit_warns_where_the_loss_rises_with_size(tmp_path, capsys):
    """The same 12 mixtures at 3 sizes; at the largest the text-heavy ones lose more."""
    rng = np.random.default_rng(1)
    w = rng.dirichlet([1, 1], 12)
    frames = []
    for n in (1e6, 4e6, 1.6e7):
        nl = 1.0 + 3.0 * n**-0.2 * np.exp(0.3 * w[:, 0])
        if n == 1.6e7:
            nl = nl * (1 + 0.3 * (w[:, 0] > 0.6))  # memorised: past the 2 % a seed moves it
        frames.append(
            pl.DataFrame({"w_text": w[:, 0], "w_code": w[:, 1], "params": n, "nl_loss": nl})
        )
    table, fit = tmp_path / "ladder.csv", tmp_path / "fit.json"
    pl.concat(frames).write_csv(table)
    argv = [*_fit_argv(table, fit, "--families", "linear", "--size-col", "params")]
    assert main([*argv, "--n-boot", "0"]) == 0
    out = capsys.readouterr().out
    rising = int((w[:, 0] > 0.6).sum())
    assert f"warning: the loss rises with size for {rising} of 12 mixtures from 4e+06 to" in out


def test_fit_says_two_sizes_give_no_size_law(ladder, tmp_path, capsys):
    table, _ = ladder
    two = tmp_path / "two.csv"
    pl.read_csv(table).filter(pl.col("params") <= 4e6).write_csv(two)
    argv = _fit_argv(two, tmp_path / "fit.json", "--families", "linear", "--size-col", "params")
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "no size law: the runs cover 2 size(s) of params (1e+06, 4e+06)" in out
    assert not json.loads((tmp_path / "fit.json").read_text())["scaling"]
    page = tmp_path / "page.html"
    report = ["report", str(two), "--fit", str(tmp_path / "fit.json"), "-o", str(page)]
    metrics = ["--nl-metric", "nl_loss", "--code-metric", "nl_loss"]
    assert main([*report, *metrics]) == 2
    assert "has no size law for nl_loss, and the report" in capsys.readouterr().err
    assert not page.exists()


def test_fit_takes_a_study_exports_stage_mixtures_by_default(ladder, tmp_path, capsys):
    rng = np.random.default_rng(5)
    init, cool = rng.uniform(0, 0.6, 12), rng.uniform(0, 0.6, 12)
    mix = {"mix.init.text": 1 - init, "mix.init.code": init}
    mix |= {"mix.cooldown.text": 1 - cool, "mix.cooldown.code": cool}
    loss = 3.0 - 0.3 * init + 0.1 * cool + 0.003 * rng.standard_normal(12)
    export = tmp_path / "export.csv"
    pl.DataFrame(mix | {"code_frac.init": init, "bpb.text": loss}).write_csv(export)
    argv = ["fit", str(export), "--metric", "bpb.text", "--families", "linear"]
    assert main([*argv, "-o", str(tmp_path / "fit.json")]) == 0
    assert "mixtures: mix.init.*, mix.cooldown.* (one per stage" in capsys.readouterr().out
    fit = json.loads((tmp_path / "fit.json").read_text())
    assert fit["mixture_groups"] == [list(mix)[:2], list(mix)[2:]]
    table, _ = ladder  # w_text, w_code, w_math: no export's columns to take
    assert main(["fit", str(table), "--metric", "nl_loss", "-o", str(tmp_path / "f2.json")]) == 2
    assert "no mix.STAGE.DOMAIN columns" in capsys.readouterr().err


def test_fit_stacks_a_ladder_exported_in_parts(ladder, tmp_path, capsys):
    table, _ = ladder
    df = pl.read_csv(table)
    parts = [tmp_path / "grid.csv", tmp_path / "arm.csv"]
    df.head(40).write_csv(parts[0])
    df.slice(40).with_columns(arm=pl.lit("long")).write_csv(parts[1])  # a column of its own
    fit = tmp_path / "fit.json"
    argv = [*_fit_argv(parts[0], fit, "--families", "linear", "--size-col", "params")]
    argv.insert(2, str(parts[1]))
    assert main(argv) == 2
    assert "grid.csv has no column 'index' to join on (" in capsys.readouterr().err
    assert not fit.exists()
    assert main([*argv, "--stack", "--n-boot", "0"]) == 0
    d = json.loads(fit.read_text())
    assert d["data"]["n_runs"] == 64 and len(d["scaling"]["nl_loss"]["sizes"]) == 4


def test_predict_warns_about_rows_outside_the_fitted_ranges(ladder, tmp_path, capsys):
    table, fit = ladder
    pred = tmp_path / "pred.csv"
    assert main(["predict", str(fit), "--mixtures", str(table), "-o", str(pred)]) == 0
    assert "warning" not in capsys.readouterr().out  # the fitted runs themselves
    hi = json.loads(fit.read_text())["data"]["weights_max"][0]
    inside, far = [0.4, 0.3, 0.3], [1.0, 0.0, 0.0]
    rows = [inside, far, inside, far] + [far] * 11
    mix = tmp_path / "mix.csv"
    pl.DataFrame(rows, schema=["w_text", "w_code", "w_math"], orient="row").write_csv(mix)
    assert main(["predict", str(fit), "--mixtures", str(mix), "-o", str(pred)]) == 0
    out = capsys.readouterr().out
    assert (
        "warning: rows 1, 3, 4, 5, 6, 7, 8, 9, 10, 11 and 3 more lie outside the weight ranges "
        f"of the fitted runs (w_text 1 > {hi:.2g}, w_code 0 < "
    ) in out
    assert out.rstrip().endswith("their predictions extrapolate")
    assert pl.read_csv(pred).height == 15  # the predictions are written all the same
    # rows named by a trial column; one row
    pl.DataFrame(
        {"trial": [7, 9], "w_text": [0.4, 1.0], "w_code": [0.3, 0.0], "w_math": [0.3, 0.0]}
    ).write_csv(mix)
    assert main(["predict", str(fit), "--mixtures", str(mix), "-o", str(pred)]) == 0
    assert "warning: row with trial 9 lies outside" in capsys.readouterr().out
    # a FIT.json written before the ranges were recorded still predicts
    old = json.loads(fit.read_text())
    del old["data"]["weights_min"], old["data"]["weights_max"]
    old_fit = tmp_path / "old.json"
    old_fit.write_text(json.dumps(old))
    assert main(["predict", str(old_fit), "--mixtures", str(mix), "-o", str(pred)]) == 0
    assert "does not record the weight ranges" in capsys.readouterr().out


def test_fit_reports_a_blown_up_family_and_leaks_no_warnings(tmp_path, capsys):
    """One run far out on a free stage variable makes the exponential explode at held-out
    runs (and scipy's Spearman divide by zero on the way): the fit says so in its CV table,
    chooses another family, and no numeric warning reaches the terminal."""
    rng = np.random.default_rng(2)
    w = rng.dirichlet([1, 1], 20)
    tpp = rng.uniform(10, 100, 20)
    y = 1.0 + 0.02 * rng.standard_normal(20)
    y[np.argmax(tpp)] += 0.5
    table, fit = tmp_path / "runs.csv", tmp_path / "fit.json"
    pl.DataFrame({"w_text": w[:, 0], "w_code": w[:, 1], "tpp": tpp, "nl_loss": y}).write_csv(table)
    argv = _fit_argv(table, fit, "--stage-cols", "tpp", "--families", "linear,exp,exp_log,stack")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert main(argv) == 0
    hidden_by_default = (
        DeprecationWarning,
        PendingDeprecationWarning,
        ImportWarning,
        ResourceWarning,
    )
    assert [
        f"{x.category.__name__}: {x.message}"
        for x in seen
        if not issubclass(x.category, hidden_by_default)
    ] == []
    captured = capsys.readouterr()
    assert "warning" not in captured.err.lower()
    exp_line = next(x for x in captured.out.splitlines() if x.strip().startswith("exp "))
    assert "(implausible CV RMSE" in exp_line and "metric sd" in exp_line
    s = json.loads(fit.read_text())["surfaces"]["nl_loss"]
    assert s["family"] != "exp" and "exp" not in s["members"]


@pytest.fixture(scope="module")
def repeated(tmp_path_factory):
    """A study-export-like ladder from a known data-constrained law (text repeats more at
    larger sizes), and a fit of it with the data-constrained law."""
    from codemix.analysis import _synthetic

    d = tmp_path_factory.mktemp("repeated")
    shares = tuple(np.linspace(0.05, 0.95, 12))
    w, n, y, rd = _synthetic.ladder(sizes=(1e6, 2e6, 4e6, 8e6, 1.6e7), shares=shares, seed=1)
    table = pl.DataFrame(
        {
            "mix.main.text": w[:, 0],
            "mix.main.code": w[:, 1],
            "non_embedding_params": n,
            "tokens": rd.tokens.sum(1),
            "tokens.main": rd.tokens.sum(1),
            "epochs.text": rd.epochs[:, 0],
            "epochs.code": rd.epochs[:, 1],
            "bpb.text": y,
        }
    )
    table.filter(pl.col("non_embedding_params") < 1.6e7).write_csv(d / "ladder.csv")
    table.filter(pl.col("non_embedding_params") == 1.6e7).write_csv(d / "confirm.csv")
    argv = ["fit", str(d / "ladder.csv"), "--mixture-cols", "mix.main.*", "--metric", "bpb.text"]
    argv += ["--size-col", "non_embedding_params", "--families", "linear", "--n-boot", "10"]
    assert main([*argv, "-o", str(d / "fit.json")]) == 0
    return d


def test_fit_chooses_the_data_law_and_predicts_at_the_targets_repetition(repeated, capsys):
    from codemix.analysis.fitfile import load_fit
    from codemix.cli._fitlines import data_law_lines

    d = repeated
    fit = json.loads((d / "fit.json").read_text())
    assert fit["scaling"]["bpb.text"]["form"] == "joint_data"  # tokens, epochs read by default
    # drawn without an overfitting term: +overfit ties joint_data held out, and the sub-law is
    # taken; the tie within one standard error is named
    contest = fit["scaling"]["bpb.text"]["selection"]["data_law"]
    assert contest["chosen"] == contest["best"] == "joint_data"
    assert "joint_data+overfit" in contest["within_one_se"]
    lines = data_law_lines(load_fit(d / "fit.json").scaling["bpb.text"], "bpb.text")
    tie = next(x for x in lines if x.startswith("a tie"))
    assert "joint_data's held-out error: " in tie and "joint_data+overfit" in tie
    # both tied laws add terms joint_data held out no better with: not in the median
    assert "the point is joint_data's prediction: the laws tied with it add terms" in tie
    law = load_fit(d / "fit.json").scaling["bpb.text"]
    assert law.tie_point == "median" and len(law.tied) == 2
    law.tie_point = "winner"
    tie = next(x for x in data_law_lines(law, "bpb.text") if x.startswith("a tie"))
    assert "the point is joint_data's prediction; --tie-point median" in tie
    argv = ["fit", str(d / "ladder.csv"), "--mixture-cols", "mix.main.*", "--metric", "bpb.text"]
    argv += ["--size-col", "non_embedding_params", "--families", "linear", "--n-boot", "0"]
    argv += ["--law", "joint_data", "--tie-point", "winner", "-o", str(d / "winner.json")]
    assert main(argv) == 0
    assert json.loads((d / "winner.json").read_text())["scaling"]["bpb.text"]["tie_point"] == (
        "winner"
    )
    # the most-read fifth held out: how much wider intervals grow past the ladder's epochs
    rep = next(x for x in lines if x.startswith("repetition error"))
    assert "text read more than" in rep
    out = d / "pred.csv"
    argv = ["predict", str(d / "fit.json"), "--mixtures", str(d / "confirm.csv")]
    assert (
        main(
            [
                *argv,
                "--size",
                "3e7",
                "--target-tokens",
                "3e8",
                "--unique-tokens",
                "text=1e6",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    p = pl.read_csv(out)
    # beside the rows' own epochs, those each mixture implies at the target
    np.testing.assert_allclose(p["predicted_epochs.text"], 3e8 * p["mix.main.text"] / 1e6)
    # fewer unique text tokens at the target: more repetition, a higher predicted loss
    assert main([*argv, "--size", "3e7", "--target-tokens", "3e8", "-o", str(out)]) == 0
    more = pl.read_csv(out)
    assert (p["predicted_bpb.text"] > more["predicted_bpb.text"]).all()
    # the confirmation rows at their own size, tokens and epochs
    assert main([*argv, "--size-col", "non_embedding_params", "-o", str(out)]) == 0
    assert "size law), tokens and epochs" in capsys.readouterr().out
    own = pl.read_csv(out)
    err = (own["predicted_bpb.text"] - own["bpb.text"]).abs() / own["bpb.text"]
    assert err.max() < 0.05
    for bad, message in (
        (["--size", "3e7", "--unique-tokens", "math=1e6"], "domain 'math' is not one the fit"),
        (["--target-tokens", "3e8"], "need a target --size"),
        (["--size-col", "non_embedding_params", "--target-tokens", "3e8"], "go with --size"),
        (["--size", "3e7", "--unique-tokens", "text"], "neither DOMAIN=TOKENS"),
    ):
        assert main([*argv, *bad, "-o", str(out)]) == 2
        assert message in capsys.readouterr().err
    argv = ["optimum", str(d / "fit.json"), "--objective", "min:bpb.text", "--target", "3e7"]
    assert main([*argv, "--target-tokens", "3e8", "--unique-tokens", "text=1e6"]) == 0
    assert "epochs at the target: text" in capsys.readouterr().out


def test_fit_prints_every_laws_held_out_error_and_refuses_recency_without_stages(repeated, capsys):
    d = repeated
    argv = ["fit", str(d / "ladder.csv"), "--mixture-cols", "mix.main.*", "--metric", "bpb.text"]
    argv += ["--size-col", "non_embedding_params", "--families", "linear", "--n-boot", "0"]
    assert main([*argv, "-o", str(d / "fit0.json")]) == 0
    out = capsys.readouterr().out
    # one stage: the recency term is not a candidate; the others all have their error printed
    assert "joint_data+overfit" in out and "recency" not in out
    assert "held-out RMSE of log bpb.text: largest size" in out
    # the best data law with one R* per domain, scored on the same checks
    assert "R* one per domain (joint_data" in out and "with one shared ->" in out
    forced = [*argv, "--law", "joint_data", "--r-star", "per-domain", "-o", str(d / "fit2.json")]
    assert main(forced) == 0
    out = capsys.readouterr().out
    assert "R* text " in out and ", code " in out and "R* one per domain" not in out
    with pytest.raises(SystemExit):
        main([*argv, "--r-star", "each", "-o", str(d / "fit3.json")])
    assert "invalid choice: 'each'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*argv, "--overfit-past", "cubic", "-o", str(d / "fit3.json")])
    assert "invalid choice: 'cubic'" in capsys.readouterr().err
    assert main([*argv, "--law", "joint_data+recency", "-o", str(d / "fit1.json")]) == 2
    assert "the recency term needs runs of 2+ stages" in capsys.readouterr().err
    assert not (d / "fit1.json").exists()


def test_fit_warns_where_no_run_read_past_the_linear_overfitting_onset():
    from codemix.analysis import _synthetic
    from codemix.analysis.contest import choose_size_law
    from codemix.analysis.scaling import ScalingConfig
    from codemix.cli._fitlines import data_law_lines

    lines = {}
    for unique in (1e9, 3e6):  # no run repeats its text; the text read up to 25 times
        w, n, y, rd = _synthetic.ladder(
            sizes=(1e6, 2e6, 4e6, 8e6), unique=(unique, 1e9), overfit=0.02
        )
        cfg, name = ScalingConfig(n_boot=0), "joint_data+overfit_linear"
        law = choose_size_law(w, n, y, rd, ("text", "code"), (1.0,), config=cfg, law=name)
        lines[unique] = "\n".join(data_law_lines(law, "bpb.text"))
    assert "overfitting term: the log loss rising by" in lines[3e6]
    assert "no run read past that onset" in lines[1e9]
    assert "no run read past that onset" not in lines[3e6]


def test_fit_says_how_the_power_overfitting_term_goes_on_past_the_ladder():
    from codemix.analysis import _synthetic
    from codemix.analysis.contest import choose_size_law
    from codemix.analysis.scaling import ScalingConfig
    from codemix.cli._fitlines import data_law_lines

    w, n, y, rd = _synthetic.ladder(sizes=(1e6, 2e6, 4e6, 8e6), unique=(3e6, 1e9), overfit=0.02)
    lines = {}
    for past in ("tangent", "power"):
        law = choose_size_law(
            w,
            n,
            y,
            rd,
            ("text", "code"),
            (1.0,),
            config=ScalingConfig(n_boot=0),
            law="joint_data+overfit",
            overfit_past=past,
        )
        assert law.overfit_past == past
        lines[past] = "\n".join(data_law_lines(law, "bpb.text"))
    assert "along its tangent past the ladder's most epochs (text 25.3" in lines["tangent"]
    assert "as the power past the ladder's most epochs too" in lines["power"]
    # with the term growing with N, its logistic is printed below it
    w, n, y, rd = _synthetic.staged_ladder(sizes=(1e6, 2e6, 4e6, 8e6), overfit_n=True)
    cols = ("mix.init.text", "mix.init.code", "mix.cooldown.text", "mix.cooldown.code")
    law = choose_size_law(
        *(w, n, y, rd, cols, (0.8, 0.2)),
        config=ScalingConfig(n_boot=0),
        groups=(2, 2),
        law="joint_data+recency+overfit+overfit_n",
    )
    said = "\n".join(data_law_lines(law, "bpb.text"))
    assert "times sigmoid(" in said and "growing with the model's size, to a ceiling" in said


def test_predict_and_optimum_warn_beyond_the_ladders_repetition(repeated, capsys, monkeypatch):
    """A target that reads the text more often than any proxy did is named as a regime the
    law has not seen; rows within the ladder are not."""
    d = repeated
    out = d / "pred_regime.csv"
    argv = ["predict", str(d / "fit.json"), "--mixtures", str(d / "ladder.csv"), "-o", str(out)]
    assert main([*argv, "--size-col", "non_embedding_params"]) == 0
    assert "beyond the ladder" not in capsys.readouterr().out
    assert (
        main([*argv, "--size", "3e7", "--target-tokens", "3e8", "--unique-tokens", "text=1e6"]) == 0
    )
    said = capsys.readouterr().out
    assert "warning: beyond the ladder's regimes: text read up to" in said
    assert "repetition-matched proxies" in said
    # the ladder that would read the text as often: 1e6 unique of the target's 3e8 tokens
    assert "--set 'train.unique_share={text=0.003333}'" in said
    argv = ["optimum", str(d / "fit.json"), "--objective", "min:bpb.text", "--target", "3e7"]
    assert main([*argv, "--target-tokens", "3e8", "--unique-tokens", "text=1e6"]) == 0
    assert "beyond the ladder's regimes: text read up to" in capsys.readouterr().out
    # a law with the power overfitting term, read beyond: how it goes on there is named, and
    # where it goes on as the power, the linear form is offered
    import dataclasses

    from codemix.analysis.datalaw import TargetData
    from codemix.analysis.fitfile import load_fit
    from codemix.cli._target import regime_warning

    fit = load_fit(d / "fit.json")
    at = ([[0.9, 0.1]], 3e7, TargetData(tokens=3e8, unique={"text": 1e6}))
    # the laws below are given terms their parameters lack, to check the wording alone: they
    # cannot predict, so the forecast's rise (the test below) is not asked of them
    monkeypatch.setattr("codemix.cli._target.rise_warning", lambda *a: "")
    assert "overfit_linear" not in regime_warning(fit, *at)  # joint_data has no such term
    law = fit.scaling["bpb.text"]
    fit.scaling["bpb.text"] = dataclasses.replace(law, extra=("overfit",))
    said = regime_warning(fit, *at)
    assert "goes on there along its tangent" in said and "compare a fit" not in said
    fit.scaling["bpb.text"] = dataclasses.replace(law, extra=("overfit",), overfit_past="power")
    said = regime_warning(fit, *at)
    assert "compare a fit with --law ...+overfit_linear" in said and "tangent" not in said
    # a joint law, which has no term for repetition, warns through the data law beside it
    fit.scaling = {"bpb.text": dataclasses.replace(_ladder_joint(d), regime=law)}
    said = regime_warning(fit, *at)
    assert "text read up to" in said and "bpb.text (joint) has no term for repetition" in said
    # laws fitted on other ladders (`codemix combine`): the warning says whose ladder it is
    wide = dataclasses.replace(law, ladder_epochs={k: 1e9 for k in law.ladder_epochs})
    fit.scaling = {"bpb.text": law, "bpb.other": wide}
    said = regime_warning(fit, *at)
    assert "regimes: bpb.text: text read up to" in said and "bpb.other" not in said
    assert "small step past the ladder" not in said  # the text read hundreds of times
    # a row past the ladder's epochs but within the few where repetition costs little
    once = dataclasses.replace(law, ladder_epochs={"text": 1.0, "code": 1e9})
    fit.scaling = {"bpb.text": once}
    mild = TargetData(tokens=3e8, unique={"text": 0.9 * 3e8 / 2.5, "code": 1e12})
    said = regime_warning(fit, [[0.9, 0.1]], 3e7, mild)
    assert "text read up to 2.5 times" in said
    assert said.endswith(
        "No domain is read more than 2.5 times here, though: up to about 4 "
        "epochs repeated tokens are worth nearly as much as new ones "
        "(Muennighoff et al. 2023), so this is a small step past the ladder"
    )


def test_regime_warning_names_a_forecast_rising_past_the_ladder():
    """A law that forecasts code-free cooldowns one size up far above the same schedules at
    the ladder's largest size says so, beside any regime beyond the ladder; a forecast that
    does not rise so says nothing."""
    import dataclasses
    import types

    from codemix.analysis import _synthetic
    from codemix.analysis.datalaw import fit_data_law
    from codemix.cli._target import regime_warning

    sizes = (1e6, 2e6, 4e6, 8e6)
    w, n, y, rd = _synthetic.staged_ladder(
        sizes=sizes, shares=(0.0, 0.3, 0.6), noise=0.01, forget=True
    )
    cols = ("mix.init.text", "mix.init.code", "mix.cooldown.text", "mix.cooldown.code")
    law = fit_data_law(w, n, y, rd, cols, (0.8, 0.2), groups=(2, 2), extra=("forget",))
    free = w[(n == sizes[-1]) & (w[:, 3] == 0) & (w[:, 1] > 0)]
    fit = types.SimpleNamespace(scaling={"bpb.code": law})
    said = regime_warning(fit, free, 2 * sizes[-1], None)
    assert "rises past the ladder" not in said  # the fitted law: +3 %
    theta = law.theta.copy()
    theta[law._layout().i_f + 1] += 2.0  # code forgotten e^2 times faster
    fit.scaling = {"bpb.code": dataclasses.replace(law, theta=theta)}
    said = regime_warning(fit, free, 2 * sizes[-1], None)
    assert said.startswith("warning: beyond the ladder's regimes: ")
    assert "code left out for up to" in said.split("\n")[0]
    rise = said.split("\n")[1]
    assert rise.startswith("warning: the law forecasts a loss that rises past the ladder by ")
    # the figure moves with the optimiser's build (+28 % to +35 %): past the 20 % it names
    pct = re.search(r"bpb\.code up to \+(\d+)% \((\d+) of (\d+) rows\)", rise)
    assert pct and int(pct[1]) > 20 and int(pct[2]) == int(pct[3]) == len(free)


def _ladder_joint(d):
    """The joint law of the `repeated` fixture's ladder (no data term)."""
    from codemix.analysis.scaling import fit_joint_law

    ladder = pl.read_csv(d / "ladder.csv")
    cols = ("mix.main.text", "mix.main.code")
    n, y = ladder["non_embedding_params"].to_numpy(), ladder["bpb.text"].to_numpy()
    return fit_joint_law(ladder.select(cols).to_numpy(), n, y, cols)


def test_report_headline_names_regimes_beyond_the_ladder(repeated, tmp_path, monkeypatch):
    """At a target far above the ladder, with the proxies' corpus, the text would be read
    more often than on any proxy: the report's answer says so."""
    from codemix.analysis.fitfile import load_fit

    d = repeated
    page, table = tmp_path / "r.html", tmp_path / "ladder.csv"
    ladder = pl.read_csv(d / "ladder.csv")
    ladder.with_columns(bpb_code=3.0 - pl.col("mix.main.code")).rename(
        {"bpb_code": "bpb.code"}
    ).write_csv(table)
    fit = tmp_path / "fit.json"

    report = ["report", str(table), "--fit", str(fit), "--target", "3e8", "-o", str(page)]

    def answer(*more: str) -> list[str]:
        assert main([*report, *more]) == 0
        head = page.read_text().split("<h2>The answer</h2>")[1].split("</ul>")[0]
        return head.split("<li>")[1:]

    def answer_line(law: str) -> str:
        argv = ["fit", str(table), "--mixture-cols", "mix.main.*", "--metric", "bpb.*"]
        argv += ["--size-col", "non_embedding_params", "--families", "linear", "--n-boot", "4"]
        assert main([*argv, "--law", law, "-o", str(fit)]) == 0
        return next(x for x in answer() if "regimes at the target" in x)

    line = answer_line("joint_data")
    assert "text read up to" in line and "(the ladder at most" in line
    assert "small step past the ladder" not in line  # read far more than a few epochs
    assert answer()[0] == line  # read first: the whole answer extrapolates into it
    assert "unique tokens text the proxies&#x27;" in line
    # the target's own corpus: read less often than on the ladder, nothing beyond it
    lines = answer("--target-tokens", "6e9", "--unique-tokens", "text=1e11,code=1e11")
    assert not any("regimes at the target" in x for x in lines)
    said = next(x for x in lines if x.startswith("Epochs at the target"))
    assert "text 0.057" in said and "with 6B training tokens; unique tokens text 100B" in said
    # its interval widened there by what the fit missed on the ladder's most-read runs
    assert load_fit(fit).scaling["bpb.text"].repetition_sd > 0  # measured 0.013 an epoch
    assert "an epoch beyond" in line and "tangent" not in line
    # a law with the overfitting power says how that term goes on past the ladder
    line = answer_line("joint_data+overfit")
    assert "goes on there along its tangent at the ladder&#x27;s most epochs" in line
    # a ladder whose text loss rose with size at its top: the answer warns of it
    d = json.loads(fit.read_text())
    rose = {"small": 1e6, "large": 2e6, "accuracy": 1.0, "pairs": 6, "mixtures": 4}
    d["decision"] = {"bpb.text": [rose | {"rising": 3, "rise_max": 0.1}]}
    fit.write_text(json.dumps(d))
    assert any("the loss rises with size for 3 of 4 mixtures" in x for x in answer())
    # a law forecasting the optimum far above the same schedule at the ladder's top (the
    # figure is rise_past_ladder's, tested in tests/analysis): the answer says so
    assert not any("forecasts the optimum" in x for x in answer())
    monkeypatch.setattr("codemix.analysis.regime.rise_past_ladder", lambda *a: (1, 1, 0.5))
    said = [x for x in answer() if "forecasts the optimum" in x]
    assert said == [
        "Warning: the law forecasts the optimum&#x27;s bpb.text +50% above the same schedule "
        "at the ladder&#x27;s largest size (more than 20%): a rise carried on from the "
        "ladder&#x27;s top rungs; rank by it, and confirm the level.</li>"
    ]


@pytest.mark.parametrize(
    ("law", "said"),
    [
        ("joint_data+forget", "forgetting: the loss times exp("),
        ("joint_data+revert", "forgetting: the log loss goes toward that of a model that never"),
    ],
)
def test_predict_reads_each_rows_stage_lengths_and_refuses_bad_ones(tmp_path, capsys, law, said):
    """A staged ladder fitted with a forgetting law: a confirmation row with a longer
    code-free cooldown (its tokens.STAGE) is predicted worse than at the proxies' split, and
    is named beyond the ladder; stage tokens that are not counts are refused."""
    from codemix.analysis import _synthetic

    sizes = (1e6, 2e6, 4e6, 8e6)
    kind = {law.rpartition("+")[2]: True}
    w, n, y, rd = _synthetic.staged_ladder(sizes=sizes, shares=(0.0, 0.2, 0.4, 0.6), **kind)
    table = _synthetic.export_table(w, n, y, rd, "bpb.code")
    table.write_csv(tmp_path / "ladder.csv")
    fit = tmp_path / "fit.json"
    argv = ["fit", str(tmp_path / "ladder.csv"), "--mixture-cols", "mix.init.*"]
    argv += ["--mixture-cols", "mix.cooldown.*", "--metric", "bpb.code", "--families", "linear"]
    argv += ["--size-col", "non_embedding_params", "--law", law, "--n-boot", "2"]
    assert main([*argv, "-o", str(fit)]) == 0
    assert said in capsys.readouterr().out
    free = table.filter((pl.col("mix.cooldown.code") == 0) & (pl.col("mix.init.code") > 0))
    free = free.filter(pl.col("non_embedding_params") == sizes[-1]).head(1)
    total = pl.col("tokens.init") + pl.col("tokens.cooldown")
    longer = free.with_columns(
        (total * 0.6).alias("tokens.init"), (total * 0.4).alias("tokens.cooldown")
    )
    capsys.readouterr()
    preds = []
    for rows, name in ((free, "same.csv"), (longer, "longer.csv")):
        rows.write_csv(tmp_path / name)
        argv = ["predict", str(fit), "--mixtures", str(tmp_path / name)]
        out = tmp_path / f"pred_{name}"
        assert main([*argv, "--size-col", "non_embedding_params", "-o", str(out)]) == 0
        preds.append(pl.read_csv(out)["predicted_bpb.code"][0])
    assert preds[1] > preds[0]
    assert "code left out for up to" in capsys.readouterr().out
    free.with_columns(pl.lit(-1.0).alias("tokens.cooldown")).write_csv(tmp_path / "bad.csv")
    argv = ["predict", str(fit), "--mixtures", str(tmp_path / "bad.csv")]
    assert main([*argv, "--size-col", "non_embedding_params", "-o", str(tmp_path / "p.csv")]) == 2
    assert "tokens.init, tokens.cooldown must be token counts" in capsys.readouterr().err


def test_combine_joins_per_metric_fits_for_predict_and_optimum(ladder, tmp_path, capsys):
    table, fit = ladder
    parts = []
    for metric in ("nl_loss", "code_loss"):  # a fit per metric, as from a ladder each
        part = tmp_path / f"{metric}.json"
        argv = ["fit", str(table), "--mixture-cols", "w_*", "--metric", metric]
        argv += ["--size-col", "params", "--families", "linear,exp", "--n-boot", "10"]
        assert main([*argv, "-o", str(part)]) == 0
        parts.append(str(part))
    both = tmp_path / "both.json"
    capsys.readouterr()
    assert main(["combine", *parts, "-o", str(both)]) == 0
    out = capsys.readouterr().out
    assert f"{parts[1]}: code_loss; size laws: code_loss (joint)" in out
    assert f"wrote {both}: 2 metrics" in out
    # the same predictions as the fit of both metrics at once, each metric fitted alone
    pred = {}
    for name, f in (("one", fit), ("combined", both)):
        dest = tmp_path / f"{name}.csv"
        argv = ["predict", str(f), "--mixtures", str(table), "--size", "470M", "-o", str(dest)]
        assert main(argv) == 0
        pred[name] = pl.read_csv(dest)
    for col in ("predicted_nl_loss", "predicted_code_loss_hi90"):
        np.testing.assert_allclose(pred["combined"][col], pred["one"][col], rtol=1e-9)
    assert main(["optimum", str(both), "--objective", "min:nl_loss", "--target", "470M"]) == 0
    assert "Pareto front at 470M (nl_loss vs code_loss" in capsys.readouterr().out


def test_combine_refuses_before_writing(ladder, tmp_path, capsys):
    _, fit = ladder
    out = tmp_path / "out.json"
    out.write_text("kept")
    assert main(["combine", str(fit), str(fit), "-o", str(out)]) == 2
    assert "named twice" in capsys.readouterr().err
    copy = tmp_path / "copy.json"
    copy.write_text(fit.read_text())
    assert main(["combine", str(fit), str(copy), "-o", str(out)]) == 2
    assert "metric 'nl_loss' is in both" in capsys.readouterr().err
    assert out.read_text() == "kept"
    assert main(["combine", str(fit), str(copy), "-o", str(tmp_path / "no" / "x.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_fit_prints_a_joint_laws_repetition_error():
    """A joint law chosen over the data laws prints its repetition error, counted by the data
    law beside it, as a data law prints its own."""
    import dataclasses

    from codemix.analysis import _synthetic
    from codemix.analysis.scaling import fit_joint_law
    from codemix.cli._fitlines import data_law_lines

    w, n, y, _ = _synthetic.ladder(sizes=(1e6, 2e6, 4e6, 8e6))
    joint = fit_joint_law(w, n, y, ("text", "code"))
    record = {"scores": {"joint": {"size": 0.01}}, "chosen": "joint", "best": "joint"}
    held = {"held_out": "text read more than 3 times", "runs": 6, "sd_log_per_epoch": 0.02}
    joint = dataclasses.replace(
        joint, selection={"data_law": record, "repetition": held}, repetition_sd=0.02
    )
    said = "\n".join(data_law_lines(joint, "bpb.text"))
    assert "repetition error calibrated on the most-read runs held out (text read more" in said
    assert "log-sd 0.02 per epoch" in said and "counted by the data law beside it" in said


def test_a_joint_law_beside_a_data_law_takes_the_targets_budget(repeated, tmp_path, capsys):
    """A fit whose chosen law is joint, with the data law kept beside it, takes --target-tokens
    and --unique-tokens: the point prediction is the joint law's, the interval widens for the
    repetition the budget implies, and the warning says the law assumes the ladder's."""
    import dataclasses

    from codemix.analysis.fitfile import load_fit, save_fit

    d = repeated
    fit = load_fit(d / "fit.json")
    law = fit.scaling["bpb.text"]
    joint = _ladder_joint(d)
    for name, sd in (("plain", 0.0), ("wide", 0.02)):
        fit.scaling = {"bpb.text": dataclasses.replace(joint, regime=law, repetition_sd=sd)}
        save_fit(fit, tmp_path / f"{name}.json")
    budget = ["--size", "3e7", "--target-tokens", "3e8", "--unique-tokens", "text=1e6"]
    rows = {}
    for name in ("plain", "wide"):
        out = tmp_path / f"{name}.csv"
        argv = ["predict", str(tmp_path / f"{name}.json"), "--mixtures", str(d / "ladder.csv")]
        assert main([*argv, *budget, "-o", str(out)]) == 0
        said = capsys.readouterr().out
        assert "bpb.text (joint) has no term for repetition" in said
        rows[name] = pl.read_csv(out)
    p, w = rows["plain"], rows["wide"]
    assert (p["predicted_bpb.text"] == w["predicted_bpb.text"]).all()
    assert (w["predicted_bpb.text_hi90"] > p["predicted_bpb.text_hi90"]).all()
    assert (
        main(
            [
                "predict",
                str(tmp_path / "wide.json"),
                "--size",
                "3e7",
                "--unique-tokens",
                "html=1e6",
                "--mixtures",
                str(d / "ladder.csv"),
                "-o",
                str(tmp_path / "x.csv"),
            ]
        )
        == 2
    )
    assert "domain 'html' is not one the fit knows" in capsys.readouterr().err


def test_predictions_name_the_unique_tokens_a_matched_ladder_makes_them_assume(capsys):
    """A repetition-matched ladder's runs read unique tokens far apart: predict and optimum
    say, once, which they assumed, and nothing once the target's are given."""
    from types import SimpleNamespace

    from codemix.analysis import _synthetic
    from codemix.analysis.datalaw import RunData, TargetData, fit_data_law
    from codemix.cli._target import print_assumed

    w, n, y, rd = _synthetic.ladder()
    unique = np.c_[0.05 * rd.tokens.sum(1), np.full(len(n), 3e7)]
    matched = RunData(rd.domains, rd.tokens, rd.tokens / unique)
    law = fit_data_law(w, n, y, matched, rd.domains, (1.0,), n_boot=0)
    fit = SimpleNamespace(scaling={"bpb.text": law, "bpb.code": law})
    print_assumed(fit, None, "  ")
    said = capsys.readouterr().out.splitlines()
    assert len(said) == 1 and said[0].startswith("  note (bpb.text): the target is assumed")
    print_assumed(fit, TargetData(unique={"text": 1e9}))
    assert capsys.readouterr().out == ""
