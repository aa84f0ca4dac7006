"""The sigmoid link from a task's bpb to its accuracy, and its two-step intervals."""

from __future__ import annotations

import numpy as np
import pytest

from codemix.analysis.link import (
    AccuracyLink,
    fit_link,
    link_bpb_metric,
    parse_link,
    sigmoid_link,
)
from codemix.core.errors import CodemixError


def _runs(n=60, seed=0, noise=0.01):
    rng = np.random.default_rng(seed)
    bpb = rng.uniform(0.6, 1.6, n)
    acc = sigmoid_link(bpb, 0.25, 0.85, 6.0, 1.0) + noise * rng.standard_normal(n)
    return bpb, acc


def test_the_link_recovers_its_parameters_and_round_trips():
    bpb, acc = _runs()
    link = fit_link("task.f.acc", "task.f.bpb", bpb, acc, 0.25, n_boot=50)
    np.testing.assert_allclose(link.params, [0.85, 6.0, 1.0], rtol=0.15)
    assert link.n_used == int((acc > 0.25).sum()) and link.n_runs == 60
    again = AccuracyLink.from_dict(link.to_dict())
    np.testing.assert_allclose(again.mean([0.8, 1.2]), link.mean([0.8, 1.2]))


def test_two_step_intervals_widen_with_the_bpb_interval_and_cover_new_runs():
    bpb, acc = _runs()
    link = fit_link("a", "b", bpb, acc, 0.25, n_boot=100)
    m = np.array([1.0, 1.0])
    mean, lo, hi = link.interval(m, m - [0.0, 0.2], m + [0.0, 0.2], 0.9)
    assert np.all(lo < mean) and np.all(mean < hi)
    assert hi[1] - lo[1] > 2 * (hi[0] - lo[0])  # bpb's own uncertainty is carried
    new_bpb, new_acc = _runs(400, seed=1)
    mean, lo, hi = link.interval(new_bpb, new_bpb, new_bpb, 0.9)
    inside = np.mean((new_acc >= lo) & (new_acc <= hi))
    assert 0.8 <= inside <= 0.98


def test_runs_at_chance_are_left_out_and_too_few_above_is_an_error():
    bpb, acc = _runs()
    acc_chance = np.where(bpb > 1.3, 0.25 - 0.01, acc)
    link = fit_link("a", "b", bpb, acc_chance, 0.25, n_boot=5)
    assert link.n_used == int((acc_chance > 0.25).sum()) < 60
    with pytest.raises(CodemixError, match="above chance"):
        fit_link("a", "b", bpb[:3], acc[:3], 0.25)
    with pytest.raises(CodemixError, match="chance level"):
        fit_link("a", "b", bpb, acc, 1.5)


def test_link_names():
    assert link_bpb_metric("task.nl_reasoning.acc") == "task.nl_reasoning.bpb"
    assert parse_link("task.copa.acc@0.5") == ("task.copa.acc", 0.5)
    assert parse_link("task.copa.acc") == ("task.copa.acc", None)
    for bad in ("acc", "task.copa.bpb"):
        with pytest.raises(CodemixError, match="accuracy column"):
            link_bpb_metric(bad)
    with pytest.raises(CodemixError, match="number"):
        parse_link("task.copa.acc@half")
