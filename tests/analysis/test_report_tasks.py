"""Task families end to end: fit with an accuracy link, predict, optimum on a predicted
accuracy, and the report's family panels, three-way front and decision accuracy."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from codemix.analysis.link import sigmoid_link
from codemix.analysis.report import ReportInput, render
from codemix.cli import main
from tests.analysis.test_report import _chromium, _dom, check_conventions

CHANCE = 0.3


def _ladder(seeds=(0, 1)) -> pl.DataFrame:
    """Six code shares at three sizes, two seeds: NL reasoning best at a quarter code,
    knowledge worse with code, code better with it; accuracy linked to the NL bpb."""
    rows = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        for trial, a in enumerate((0.0, 0.25, 0.5, 0.75, 0.9, 1.0)):
            for size, n in (("s", 4e5), ("m", 9.5e5), ("l", 1.4e6)):
                f = 40 * n**-0.3
                nl = 0.8 + f * (1 + (a - 0.25) ** 2) + rng.normal(0, 0.004)
                wk = 0.9 + f * (1 + a) + rng.normal(0, 0.004)
                code = 0.5 + f * (2 - a) + rng.normal(0, 0.004)
                acc = sigmoid_link(nl, CHANCE, 0.8, 4.0, 1.8) + rng.normal(0, 0.005)
                row = {"trial": trial, "size": size, "params": n, "vocab_size": 4096}
                row |= {"param.stages.main.code_frac": a, "code_domains": "code"}
                row |= {"mix.main.text": 1 - a, "mix.main.code": a, "code_frac.main": a}
                row |= {"bpb.text": nl, "bpb.code": code}
                row |= {
                    "task.nl_reasoning.bpb": nl,
                    "task.world_knowledge.bpb": wk,
                    "task.code.bpb": code,
                    "task.nl_reasoning.acc": acc,
                    "task.nl_reasoning.chance": CHANCE,
                }
                rows.append(row)
    return pl.DataFrame(rows)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    d = tmp_path_factory.mktemp("tasks")
    _ladder().write_csv(d / "r.csv")
    args = ["fit", str(d / "r.csv"), "--mixture-cols", "mix.main.*", "--size-col", "params"]
    for m in ("task.nl_reasoning.bpb", "task.world_knowledge.bpb", "task.code.bpb"):
        args += ["--metric", m]
    args += ["--link", "task.nl_reasoning.acc", "--n-boot", "20", "--families", "quadratic"]
    assert main([*args, "-o", str(d / "fit.json")]) == 0
    return d


def test_fit_records_links_and_decision_accuracy(fitted, capsys):
    fit = json.loads((fitted / "fit.json").read_text())
    link = fit["links"]["task.nl_reasoning.acc"]
    assert link["bpb_metric"] == "task.nl_reasoning.bpb" and link["chance"] == CHANCE
    assert link["n_used"] == link["n_runs"] == 36
    pairs = fit["decision"]["task.world_knowledge.bpb"]
    assert {(r["small"], r["large"]) for r in pairs} >= {(4e5, 1.4e6), (1.4e6, 1.4e6)}
    assert all(r["accuracy"] == 1.0 for r in pairs if r["small"] != r["large"])


def test_predicted_accuracy_at_the_target_and_its_optimum(fitted, capsys):
    mix = fitted / "mix.csv"
    pl.DataFrame({"mix.main.text": [1.0, 0.75, 0.1], "mix.main.code": [0.0, 0.25, 0.9]}).write_csv(
        mix
    )
    out = fitted / "pred.csv"
    args = ["predict", str(fitted / "fit.json"), "--mixtures", str(mix), "--size", "1e7"]
    assert main([*args, "-o", str(out)]) == 0
    p = pl.read_csv(out)
    acc, lo, hi = (p[f"task.nl_reasoning.acc{s}"].to_numpy() for s in ("", "_lo90", "_hi90"))
    assert np.all((lo < acc) & (acc < hi)) and np.all((CHANCE < acc) & (acc <= 0.8))
    assert acc[1] > acc[0] and acc[1] > acc[2]  # a quarter code reasons best
    # three sizes: beside predictions from the size law, the fit's doubt is said
    few = "warning from the fit: task.code.bpb: the size law rests on 3 sizes"
    assert few in capsys.readouterr().out
    args = ["optimum", str(fitted / "fit.json"), "--target", "1e7", "--draws", "20"]
    assert main([*args, "--objective", "max:task.nl_reasoning.acc"]) == 0
    text = capsys.readouterr().out
    code = float(next(ln for ln in text.splitlines() if "mix.main.code" in ln).split()[1])
    assert 0.1 < code < 0.45, text
    assert "predicted task.nl_reasoning.acc at" in text
    assert "  " + few in text


def test_the_report_draws_families_front_and_decision_accuracy(fitted, tmp_path):
    page = tmp_path / "r.html"
    args = ["report", str(fitted / "r.csv"), "--fit", str(fitted / "fit.json")]
    args += ["--nl-metric", "task.nl_reasoning.bpb", "--code-metric", "task.code.bpb"]
    assert main([*args, "--target", "1e7", "-o", str(page)]) == 0
    text = page.read_text()
    assert "Task families against the code share" in text and "Three-way front" in text
    assert "Decision accuracy" in text and "seed vs seed" in text
    # each family's own answer heads the page: knowledge wants no code, code all of it
    head = text.split("<h2>The answer</h2>")[1].split("</ul>")[0]
    assert "For nl reasoning (max:task.nl_reasoning.acc), code share at 1e7" in head
    assert (
        "For world knowledge (min:task.world_knowledge.bpb), code share at 1e7 parameters: main 0%"
        in head
    )
    assert "For code (min:task.code.bpb), code share at 1e7 parameters: main 100%" in head
    dom = _dom(_chromium(), page)
    assert 'id="js-errors"></pre>' in dom


def test_without_task_columns_the_task_parts_are_left_out():
    df = _ladder(seeds=(0,)).drop(pl.selectors.starts_with("task."))
    page = render(ReportInput(df))
    assert "Task families" not in page and "Three-way front" not in page


def test_the_family_panels_and_front_follow_the_conventions(fitted):
    from codemix.analysis.fitfile import load_fit
    from codemix.analysis.report import _figures, from_fit
    from codemix.analysis.sizes import resolve_size

    df = pl.read_csv(fitted / "r.csv")
    r = ReportInput(df, nl_metric="task.nl_reasoning.bpb", code_metric="task.code.bpb")
    fit = load_fit(fitted / "fit.json")
    from_fit(r, fit, resolve_size("1e7", fit))
    figs = {f.layout.title.text.split(" ")[0]: f for f in _figures(r)}
    check_conventions(list(figs.values()), df)
    panels = figs["Task"]
    y = [panels.layout[a].title.text for a in ("yaxis", "yaxis2", "yaxis3", "yaxis4")]
    assert y == [
        "task.nl_reasoning.bpb (bits per byte)",
        "task.world_knowledge.bpb (bits per byte)",
        "task.code.bpb (bits per byte)",
        "task.nl_reasoning.acc (fraction correct)",
    ]
    assert panels.layout.xaxis.title.text == "code share of stage main (%)"
    assert any(t.name == "1e7 90 % interval" for t in panels.data)
    front = figs["Three-way"].data[0]
    assert front.marker.colorbar.title.text == "task.code.bpb (bits per byte)"


def test_the_headline_answers_the_studys_objective_then_each_family(fitted):
    from codemix.analysis.fitfile import load_fit
    from codemix.analysis.headline import aims

    fit = load_fit(fitted / "fit.json")
    got = aims(fit, "task.nl_reasoning.bpb", "min:task.world_knowledge.bpb")
    assert [(name, aim.text) for name, aim in got] == [
        ("the study's objective", "min:task.world_knowledge.bpb"),
        ("nl reasoning", "max:task.nl_reasoning.acc"),  # linked: the accuracy, not the bpb
        ("code", "min:task.code.bpb"),  # knowledge's is the study's, said once
    ]
    # the study's objective is the NL metric already answered, or one the fit lacks: no line
    for objective in ("min:task.nl_reasoning.bpb", "min:bpb.text", None):
        names = [name for name, _ in aims(fit, "task.nl_reasoning.bpb", objective)]
        assert names == ["nl reasoning", "world knowledge", "code"]
