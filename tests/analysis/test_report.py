"""The report renders in a real browser (headless Chromium) with no JavaScript error."""

import shutil
import subprocess

import numpy as np
import polars as pl
import pytest

from codemix.analysis.report import ReportInput, render, write_report
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
    assert "22 of 24 inside their 90 % interval" in page  # trial 0's two runs fall outside
    assert "Predictions at 2.8B: the predicted Pareto front" in page


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
    assert "gain over text only" in head and "rests on 2 sizes" not in head
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
