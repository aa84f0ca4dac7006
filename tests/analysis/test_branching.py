import polars as pl
import pytest

from codemix.analysis import branching
from codemix.analysis.report import ReportInput, render


def _df():
    return pl.DataFrame(
        {
            "trial": [0, 0, 1, 1],
            "size": ["1M"] * 4,
            "seed": [0, 1, 0, 1],
            "bpb.text": [1.00, 1.02, 1.10, 1.13],
            "bpb.code": [2.0, 2.1, 1.9, 1.8],
            "scratch.bpb.text": [1.001, None, None, None],
            "scratch.flops": [10.0, None, None, None],
            "flops": [10.0] * 4,
            "flops_charged": [10.0, 10.0, 2.0, 2.0],
        }
    )


def test_seed_spread_pools_the_variance_within_trials():
    sd, n = branching.seed_spread(_df(), "bpb.text")
    assert n == 2
    assert sd == pytest.approx(((0.02**2 / 2 + 0.03**2 / 2) / 2) ** 0.5)
    assert branching.seed_spread(_df().filter(pl.col("seed") == 0), "bpb.text") is None


def test_diagonal_sets_the_scratch_run_beside_its_branched_twin():
    d = branching.diagonal(_df(), ["bpb.text", "bpb.code"])
    assert d.height == 1 and d["bpb.text difference"][0] == pytest.approx(-0.001)
    assert "bpb.code difference" not in d.columns  # no scratch column for it
    assert branching.diagonal(_df().drop("scratch.bpb.text"), ["bpb.text"]) is None


def test_the_report_shows_the_saving_and_the_check_against_the_spread():
    page = render(ReportInput(_df()))
    # the diagonal's run from scratch is compute the study spent too
    assert "Training compute: 34 FLOPs, against 40" in page and "(85%)" in page
    assert "and 10 for the diagonal check" in page
    assert "branched against from scratch" in page
    assert "mean difference -0.0010" in page and "seed-to-seed spread 0.0180" in page


def test_branches_are_set_against_the_control_per_choice():
    df = pl.DataFrame(
        {
            "choice.anneal": ["control", "more", "control", "more"],
            "size": ["1M"] * 4,
            "seed": [0, 0, 1, 1],
            "vs_control.bpb.text": [0.0, -0.02, 0.0, -0.01],
        }
    )
    t = branching.against_control(df, ["bpb.text", "bpb.code"])
    more = t.filter(pl.col("choice.anneal") == "more").row(0, named=True)
    assert more["seeds"] == 2 and more["bpb.text vs control"] == pytest.approx(-0.015)
    assert more["bpb.text seed sd"] == pytest.approx(0.00707, rel=1e-3)
    assert "Against the control" in branching.section(df, ["bpb.text"], lambda d: "")
