"""The report renders in a real browser (headless Chromium) with no JavaScript error."""

import re
import shutil
import subprocess

import numpy as np
import polars as pl
import pytest

from codemix.analysis.figures import size_colours
from codemix.analysis.report import ReportInput, _figures, _sizes, render, write_report
from codemix.cli import main
from codemix.core.errors import CodemixError

EVIL = '</script><script>document.title="pwned"</script>'


def _table(n: int = 12) -> pl.DataFrame:
    """A results table in the export format, from a known trade-off with noise."""
    rng = np.random.default_rng(0)
    rows = []
    for trial in range(n):
        a, b = rng.uniform(0, 1), rng.uniform(0, 0.5)
        for size, params in (("test", 4e5), ("0.5M", 9.5e5)):
            scale = (params / 4e5) ** -0.1
            rows.append(
                {
                    "study": EVIL,
                    "trial": trial,
                    "state": "complete",
                    "size": size,
                    "params": params,
                    "tokens": 1e5,
                    "flops": 6 * params * 1e5,
                    "param.stages.init.code_frac": a,
                    "param.stages.cooldown.code_frac": b,
                    "objective.0": scale * (2.5 + (a - 0.25) ** 2),
                    "bpb.text": scale * (2.5 + (a - 0.25) ** 2 + 0.1 * b) + rng.normal(0, 0.01),
                    "bpb.code": scale * (3.5 - a - b) + rng.normal(0, 0.01),
                    "mix.init.code": a,
                    "mix.init.text": 1 - a,
                    "epochs.text": 0.1,
                    "epochs.code": 0.2,
                }
            )
    return pl.DataFrame(rows)


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("no chromium (.ci/run installs Debian's chromium package)")
    return exe


def _dom(exe: str, page) -> str:
    out = subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=10000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_every_figure_renders_without_errors(tmp_path):
    exe = _chromium()
    page = tmp_path / "report.html"
    n = write_report(ReportInput(_table(), title=f"study {EVIL}"), page)
    assert n == 6  # progress, Pareto, response, contour, scaling, mixture
    dom = _dom(exe, page)
    figures = dom.split('class="figure"')[1:]
    assert len(figures) == n
    assert all('class="main-svg"' in f for f in figures)  # plotly drew every one
    errors = dom.split('<pre id="js-errors">')[1].split("</pre>")[0]
    assert errors == ""
    # the injected script never ran: the title is still the escaped study name
    assert dom.split("<title>")[1].split("</title>")[0].startswith("study &lt;/script&gt;")


def test_names_are_escaped():
    page = render(ReportInput(_table(), title=EVIL))
    assert EVIL not in page
    assert "&lt;/script&gt;" in page


def test_the_top_says_which_trials_failed_and_which_were_retried():
    df = _table(4).with_columns(retry_of=pl.lit(None, pl.Int64))
    assert "class=warn" not in render(ReportInput(df))
    state = pl.when(pl.col("trial") < 2).then(pl.lit("fail")).otherwise(pl.col("state"))
    failed = df.with_columns(state=state)
    assert "failed trials (2 fail)" in render(ReportInput(failed))
    # trial 0 was interrupted and its retry (trial 3) ran: only trial 1 failed
    retried = failed.with_columns(retry_of=pl.when(pl.col("trial") == 3).then(0))
    page = render(ReportInput(retried))
    assert "failed trials (1 fail)" in page
    assert "1 trial(s) interrupted and retried: their retries stand for them" in page
    text = df.with_columns(state=state, retry_of=pl.lit(None, pl.String))  # as a CSV reads it
    assert "failed trials (2 fail)" in render(ReportInput(text))


def test_predicted_front_and_calibration(tmp_path):
    m = pl.col("bpb.text")
    df = _table().with_columns(
        (m + 0.01).alias("predicted_bpb.text"),
        (m - 0.02).alias("predicted_bpb.text_lo90"),
        (m + 0.005 - 0.1 * (pl.col("trial") == 0)).alias("predicted_bpb.text_hi90"),
    )
    pred = pl.DataFrame(
        {
            "bpb.text": [2.2, 2.3],
            "bpb.text_lo90": [2.1, 2.2],
            "bpb.text_hi90": [2.3, 2.4],
            "bpb.code": [3.0, 2.5],
        }
    )
    page = render(ReportInput(df, target="2.8B", predictions=pred))
    assert "2.8B predicted front" in page and "Calibration" in page
    # trial 0's two runs fall outside
    assert "Calibration: bpb.text predicted against observed (22 of 24 inside" in page
    assert "Calibration: bpb.code" not in page  # no code predictions: no code figure
    assert "Predictions at 2.8B: the predicted Pareto front" in page
    c = pl.col("bpb.code")
    df = df.with_columns(
        (c * 1.02).alias("predicted_bpb.code"),
        (c * 0.9).alias("predicted_bpb.code_lo90"),
        (c * 1.1).alias("predicted_bpb.code_hi90"),
    )
    page = render(ReportInput(df))
    code = page.split("Calibration: bpb.code predicted against observed (")[1]
    assert code.startswith("24 of 24 inside their 90 % interval; mean relative error 2.0%)")
    assert "observed code bpb.code (bits per byte)" in page  # each metric's own axis


def test_no_contour_from_fewer_share_pairs_than_it_needs():
    page = render(ReportInput(_table(12)))
    assert "over two stage shares (quadratic fit" in page
    # six schedules, each run twice: twelve rows of one size but six share pairs
    six = _table(6)
    page = render(ReportInput(pl.concat([six, six.with_columns(pl.col("trial") + 6)])))
    assert "over two stage shares (quadratic fit" not in page
    assert "Study progress" in page
    named = six.with_columns(pl.format("s{}", pl.col("trial")).alias("choice.schedule"))
    assert "Study progress" not in render(ReportInput(named))  # a grid's order is no search


def test_cli(tmp_path, capsys):
    _table().write_csv(tmp_path / "r.csv")
    assert main(["report", str(tmp_path / "r.csv"), "-o", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").stat().st_size > 1_000_000  # plotly.js is inline
    assert (
        main(
            [
                "report",
                str(tmp_path / "r.csv"),
                "-o",
                str(tmp_path / "x.html"),
                "--nl-metric",
                "accuracy",
            ]
        )
        == 2
    )
    assert "no column 'accuracy'" in capsys.readouterr().err
    with pytest.raises(CodemixError, match="empty"):
        render(ReportInput(_table().head(0)))


def _ladder(trials: int, seed: int, cooldown: bool) -> pl.DataFrame:
    """Runs at three small sizes from a known law, with a study export's columns: NL loss
    lowest at a quarter code in init (and, with `cooldown`, lowered by cooldown code)."""
    rng = np.random.default_rng(seed)
    rows = []
    for trial in range(trials):
        a = rng.uniform(0, 1)
        c = rng.uniform(0, 0.5) if cooldown else 0.0
        for size, n in (("s", 4e5), ("m", 9.5e5), ("l", 1.4e6)):
            nl = 2 + 40 * n**-0.3 * (1 + (a - 0.25) ** 2 - 0.2 * c)
            row = {"trial": trial, "size": size, "params": n, "vocab_size": 4096}
            row |= {"code_domains": "code", "mix.init.text": 1 - a, "mix.init.code": a}
            row["code_frac.init"] = a
            if cooldown:
                row |= {"mix.cooldown.text": 1 - c, "mix.cooldown.code": c}
                row["code_frac.cooldown"] = c
            row["bpb.text"] = nl + rng.normal(0, 0.003)
            row["bpb.code"] = 2 + 60 * n**-0.3 * (1.5 - a - c) + rng.normal(0, 0.003)
            rows.append(row)
    return pl.DataFrame(rows)


def test_cli_with_a_fit_adds_predictions(tmp_path, capsys):
    _ladder(12, 1, cooldown=False).write_csv(tmp_path / "r.csv")
    assert (
        main(
            [
                "fit",
                str(tmp_path / "r.csv"),
                "--mixture-cols",
                "mix.init.*",
                "--metric",
                "bpb.text",
                "--metric",
                "bpb.code",
                "--size-col",
                "params",
                "--n-boot",
                "20",
                "--families",
                "linear,quadratic",
                "-o",
                str(tmp_path / "fit.json"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "report",
                str(tmp_path / "r.csv"),
                "--fit",
                str(tmp_path / "fit.json"),
                "--target",
                "2.8B",
                "-o",
                str(tmp_path / "r.html"),
            ]
        )
        == 0
    )
    page = (tmp_path / "r.html").read_text()
    assert "2.8B predicted front" in page and "Predictions at 2.8B" in page
    assert "extrapolation to 2.8B" in page
    assert "mixture-and-size law (joint, as `codemix fit` chose it for bpb.text)" in page
    resolved = "2.8B (2.53e9 parameters: the preset at vocabulary 4096, total)"
    assert resolved in page and f"predictions at {resolved}\n" in capsys.readouterr().out
    assert "Response along code_frac.init" in page  # the fit's code domains: init's share


def test_a_two_stage_fit_draws_the_predicted_contour(tmp_path):
    from codemix.analysis.fitfile import load_fit
    from codemix.analysis.report import from_fit
    from codemix.analysis.sizes import resolve_size

    df = _ladder(14, 2, cooldown=True)
    df.write_csv(tmp_path / "r.csv")
    argv = ["fit", str(tmp_path / "r.csv"), "--mixture-cols", "mix.init.*"]
    argv += ["--mixture-cols", "mix.cooldown.*", "--metric", "bpb.*", "--size-col", "params"]
    assert (
        main([*argv, "--families", "linear", "--n-boot", "10", "-o", str(tmp_path / "f.json")]) == 0
    )
    r = ReportInput(df)
    fit = load_fit(tmp_path / "f.json")
    from_fit(r, fit, resolve_size("2.8B", fit))
    c = r.contour
    assert (c["x_col"], c["y_col"]) == ("code_frac.init", "code_frac.cooldown")
    assert c["z"].shape == (25, 25) and np.all(np.isfinite(c["z"]))
    assert c["y"].max() <= df["mix.cooldown.code"].max() + 1e-9  # no extrapolation in the mixture
    page = tmp_path / "report.html"
    write_report(r, page)
    text = page.read_text()
    assert "predicted at 2.8B over two stages" in text
    # the answer comes first: a code share per stage, its gain over text only, the warnings
    head = text.split("<h2>The answer</h2>")[1].split("</ul>")[0]
    assert "Recommended code share of stage init at 2.8B" in head
    assert "Recommended code share of stage cooldown at 2.8B" in head
    assert "gain over text only" in head and "Warning: the size law rests on 3 sizes" in head
    assert df["mix.cooldown.code"].min() > 0.01  # no run without code: text only extrapolates
    assert "text only lying outside the fitted runs" in head and "(extrapolated)" in head
    assert "For nl reasoning" not in head  # no task metrics fitted: no family answers
    assert text.index("The answer") < text.index('class="figure"')
    assert "predicted optimum" in text and "bpb.text (bits per byte)" in text  # the contour
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe:
        dom = _dom(exe, page)
        assert dom.split('<pre id="js-errors">')[1].split("</pre>")[0] == ""


def _two_code_domains(trials: int = 12, seed: int = 4) -> pl.DataFrame:
    """Init mixes text, web_code and hq_code; NL loss is lowest at a third of code in all."""
    rng = np.random.default_rng(seed)
    rows = []
    for trial in range(trials):
        t, web, hq = rng.dirichlet([1, 1, 1])
        for size, n in (("s", 4e5), ("m", 9.5e5), ("l", 1.4e6)):
            row = {"trial": trial, "size": size, "params": n, "vocab_size": 4096}
            row |= {"mix.init.text": t, "mix.init.web_code": web, "mix.init.hq_code": hq}
            row |= {"code_domains": "web_code,hq_code", "code_frac.init": web + hq}
            row["bpb.text"] = 2 + 40 * n**-0.3 * (1 + (web + hq - 0.33) ** 2) + rng.normal(0, 0.003)
            row["bpb.code"] = 2 + 60 * n**-0.3 * (1.5 - web - 1.2 * hq) + rng.normal(0, 0.003)
            rows.append(row)
    return pl.DataFrame(rows)


def _fit_two_code_domains(tmp_path, df, *extra):
    from codemix.analysis.fitfile import load_fit

    df.write_csv(tmp_path / "r.csv")
    argv = ["fit", str(tmp_path / "r.csv"), "--mixture-cols", "mix.init.*", "--metric", "bpb.*"]
    argv += ["--size-col", "params", "--families", "linear", "--n-boot", "10", *extra]
    assert main([*argv, "-o", str(tmp_path / "f.json")]) == 0
    return load_fit(tmp_path / "f.json")


def test_the_code_share_sums_every_code_domain_the_fit_names(tmp_path):
    """web_code and hq_code are both code: the curve runs along their summed share (the
    columns' suffixes would have picked hq_code alone)."""
    from codemix.analysis.report import from_fit
    from codemix.analysis.sizes import resolve_size

    df = _two_code_domains()
    fit = _fit_two_code_domains(tmp_path, df)
    assert fit.code_domains == ("web_code", "hq_code")
    r = ReportInput(df)
    from_fit(r, fit, resolve_size("2.8B", fit))
    assert r.share_col == "code_frac.init" and r.contour is None  # one stage: no contour
    x = r.curves["bpb.text"]["x"]
    shares = df["code_frac.init"]
    assert x.min() >= shares.min() - 1e-6 and x.max() <= shares.max() + 1e-6
    assert x.max() > df["mix.init.hq_code"].max()  # the sum reaches past one domain's share
    page = render(r)
    assert "Response along code_frac.init" in page and "records no code domains" not in page


def test_without_code_domains_the_report_leaves_out_the_code_share_curves(tmp_path):
    from codemix.analysis.report import from_fit
    from codemix.analysis.sizes import resolve_size

    df = _two_code_domains().drop("code_domains", "code_frac.init")
    fit = _fit_two_code_domains(tmp_path, df)
    assert fit.code_domains is None
    r = ReportInput(df)
    from_fit(r, fit, resolve_size("1e9", fit))
    assert r.curves == {} and r.contour is None and r.share_col is None
    page = render(r)
    assert "records no code domains" in page and "Response along" not in page
    assert "Predictions at 1e9 parameters come from" in page
    # named on the command line, they win (a quick fit: one size, no size law)
    from codemix.analysis.fitfile import load_fit

    argv = ["fit", str(tmp_path / "r.csv"), "--mixture-cols", "mix.init.*", "--metric", "bpb.text"]
    argv += ["--families", "linear", "--code-domains", "hq_code", "-o", str(tmp_path / "g.json")]
    assert main(argv) == 0
    assert load_fit(tmp_path / "g.json").code_domains == ("hq_code",)


def test_an_interrupted_report_keeps_the_old_page(tmp_path, monkeypatch):
    import os

    _table().write_csv(tmp_path / "r.csv")
    out = tmp_path / "r.html"
    assert main(["report", str(tmp_path / "r.csv"), "-o", str(out)]) == 0
    before = out.read_bytes()

    def killed(src, dst):  # the writer dies between writing the new page and the rename
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_report(ReportInput(_table(8)), out)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv", "r.html"]


# The figures' conventions: every axis names its metric and unit, one colour per size in
# every figure, one metric per y axis, intervals named with their level.
UNIT = re.compile(r"^\S.*\([^()]+\)$")
SIZE_FIGURES = ("NL versus code", "Response along", "Scaling:")


def _used_axes(fig) -> set[str]:
    """The layout's axes that some trace draws on: xaxis, yaxis2, ..."""
    return {f"{k}axis{(getattr(t, f'{k}axis', None) or k)[1:]}" for t in fig.data for k in "xy"}


def _colours(trace) -> set[str]:
    marker = getattr(trace, "marker", None)
    line = getattr(trace, "line", None)
    found = (getattr(marker, "color", None), getattr(line, "color", None))
    return {c for c in found if isinstance(c, str)}


def _metrics(df: pl.DataFrame) -> dict[str, np.ndarray]:
    """The table's metric columns, one name per distinct column of values."""
    out: dict[tuple, str] = {}
    for c in df.columns:
        if c.startswith(("bpb.", "loss.", "task.", "objective.")) and df[c].dtype.is_numeric():
            v = np.round(df[c].drop_nulls().to_numpy().astype(float), 9)
            out.setdefault(tuple(v), c)
    return {c: np.array(v) for v, c in out.items()}


def _y_metrics(fig, axis_name: str, metrics: dict[str, np.ndarray]) -> set[str]:
    """The metrics whose observed values the markers on a y axis show."""
    ref = "y" + axis_name[len("yaxis") :]
    found = set()
    for t in fig.data:
        if t.type != "scatter" or "markers" not in (t.mode or "") or (t.yaxis or "y") != ref:
            continue
        y = np.round(np.asarray(t.y, float), 9)
        found |= {m for m, v in metrics.items() if len(y) and np.isin(y, v).all()}
    return found


def _check_axes(fig, metrics: dict[str, np.ndarray]) -> None:
    for name in _used_axes(fig):
        title = fig.layout[name].title.text or ""
        assert UNIT.match(title), (fig.layout.title.text, name, title)
        if name.startswith("yaxis"):
            assert sum(m in title for m in metrics) <= 1, title
            assert len(_y_metrics(fig, name, metrics)) <= 1, (fig.layout.title.text, name)
    for t in fig.data:
        bar = t.colorbar if t.type == "contour" else None
        if t.type == "scatter" and t.marker.colorscale is not None:
            bar = t.marker.colorbar
        if bar is not None:
            assert UNIT.match(bar.title.text or ""), bar.title.text


def _check_intervals(fig) -> None:
    for t in fig.data:
        if t.type == "scatter" and t.fill == "toself":
            assert "90 %" in t.name, t.name
        bars = t.type == "scatter" and (t.error_y.array is not None or t.error_x.array is not None)
        if bars and ("predicted" in t.name or "confirmatory" in t.name):
            assert "90 %" in t.name, t.name


def check_conventions(figs: list, df: pl.DataFrame) -> None:
    sizes = _sizes(df)
    metrics = _metrics(df)
    colour: dict[str, set[str]] = {s: set() for s in sizes}
    for fig in figs:
        _check_axes(fig, metrics)
        _check_intervals(fig)
        mine = [t for t in fig.data if t.legendgroup in colour]
        for t in mine:
            colour[t.legendgroup] |= _colours(t)
        named = [t.legendgroup for t in mine if t.showlegend is not False]
        assert len(named) == len(set(named)), (fig.layout.title.text, named)  # a size once
        if fig.layout.title.text.startswith(SIZE_FIGURES):
            assert {t.legendgroup for t in mine} == set(sizes), fig.layout.title.text
    assert all(len(c) == 1 for c in colour.values()), colour
    assert len({c for cs in colour.values() for c in cs}) == len(sizes)  # sizes differ


def _everything() -> ReportInput:
    """The table with every predicted part a fit gives, at a target of 2.8B."""
    m = pl.col("bpb.text")
    df = _table().with_columns(
        (m + 0.01).alias("predicted_bpb.text"),
        (m - 0.02).alias("predicted_bpb.text_lo90"),
        (m + 0.02).alias("predicted_bpb.text_hi90"),
    )
    x = np.linspace(0, 1, 5)
    band = pl.DataFrame({"x": x, "y": 2.5 + x, "lo": 2.4 + x, "hi": 2.6 + x})
    pred = {"bpb.text": [2.2, 2.3], "bpb.text_lo90": [2.1, 2.2], "bpb.text_hi90": [2.3, 2.4]}
    pred = pl.DataFrame(pred | {"bpb.code": [3.0, 2.5]})
    contour = {"x": x, "y": x / 2, "z": np.add.outer(x, x), "x_col": "param.stages.init.code_frac"}
    contour["y_col"] = "param.stages.cooldown.code_frac"
    r = ReportInput(df, target="2.8B", predictions=pred)
    r.curves = {"bpb.text": band, "bpb.code": band.with_columns(pl.col("y", "lo", "hi") + 1)}
    r.scaling["bpb.text"] = band.rename({"x": "params"}).with_columns(pl.col("params") * 1e9)
    r.share_col, r.contour = "param.stages.init.code_frac", contour
    return r


def test_every_figure_follows_the_conventions():
    r = _everything()
    figs = _figures(r)
    assert len(figs) == 7  # progress, Pareto, response, contour, scaling, mixture, calibration
    check_conventions(figs, r.results)
    check_conventions(_figures(ReportInput(_table())), _table())  # the quadratic contour


def test_the_response_gives_each_metric_its_own_panel():
    fig = next(f for f in _figures(_everything()) if f.layout.title.text.startswith("Response"))
    titles = [fig.layout[a].title.text for a in sorted(_used_axes(fig)) if a[0] == "y"]
    assert titles == ["NL bpb.text (bits per byte)", "code bpb.code (bits per byte)"]
    x = {fig.layout[a].title.text for a in _used_axes(fig) if a[0] == "x"}
    assert x == {"searched code share of stage init (%)"}
    assert fig.layout.xaxis.tickformat == ".0%"


def test_a_size_keeps_its_colour_in_every_figure():
    figs = _figures(_everything())
    colours = size_colours(["test", "0.5M"])
    drawn = {s: 0 for s in colours}
    for fig in figs:
        for t in fig.data:
            if t.legendgroup in colours:
                assert _colours(t) == {colours[t.legendgroup]}, fig.layout.title.text
        for s in {t.legendgroup for t in fig.data} & set(colours):
            drawn[s] += 1
    assert drawn == {"test": 4, "0.5M": 5}  # Pareto, response, scaling, calibration; contour


def test_the_progress_axis_names_the_metric_the_objective_reports():
    df = _table()
    fig = _figures(ReportInput(df))[0]
    assert fig.layout.yaxis.title.text.startswith("objective.0 (the study's first objective")
    df = df.with_columns(pl.col("bpb.text").alias("objective.0"))
    big = df.filter(pl.col("size") == "0.5M")
    df = df.drop("objective.0").join(big.select("trial", "objective.0"), on="trial")
    fig = _figures(ReportInput(df))[0]
    assert fig.layout.yaxis.title.text == "objective.0: bpb.text at 0.5M (bits per byte)"


def test_the_studys_objective_as_the_headline_answers_it():
    from types import SimpleNamespace as NS

    from codemix.cli.report import _objective_text

    first = NS(metric="task.nl_reasoning.acc", direction="maximize", weight=None)
    other = NS(metric="bpb.code", direction="minimize", weight=None)
    assert _objective_text(NS(objectives=(first, other), weighted=False)) == (
        "max:task.nl_reasoning.acc"
    )
    first, other = NS(**vars(first) | {"weight": 0.7}), NS(**vars(other) | {"weight": 0.3})
    spec = NS(objectives=(first, other), weighted=True)
    assert _objective_text(spec) == "weighted:task.nl_reasoning.acc=-0.7,bpb.code=0.3"
    assert _objective_text(NS(objectives=(), weighted=False)) is None
