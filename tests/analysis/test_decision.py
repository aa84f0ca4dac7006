"""Decision accuracy: pairs of mixtures ranked alike by two sizes, and seed against seed."""

from __future__ import annotations

import numpy as np
import pytest

from codemix.analysis.decision import decision_accuracy, describe, pair_agreement, rising_warning


def test_pair_agreement_counts_ties_at_the_small_size_as_half():
    assert pair_agreement(np.array([1.0, 2, 3]), np.array([1.0, 2, 3])) == (1.0, 3)
    assert pair_agreement(np.array([3.0, 2, 1]), np.array([1.0, 2, 3])) == (0.0, 3)
    # one pair tied small (half), the large size's tie left out
    acc, n = pair_agreement(np.array([1.0, 1, 2]), np.array([1.0, 2, 2]))
    assert n == 2 and acc == pytest.approx((0.5 + 1) / 2)
    assert np.isnan(pair_agreement(np.ones(3), np.ones(3))[0])


def test_sizes_are_matched_by_mixture_and_seeds_averaged_first():
    w = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    # the small size swaps the last two mixtures; the large one has two seeds of each
    weights = np.r_[w, w, w]
    size = np.r_[np.full(3, 1e6), np.full(6, 4e6)]
    y = np.r_[[3.0, 1.0, 2.0], [3.0, 2.0, 1.0], [3.2, 1.8, 1.1]]
    recs = decision_accuracy(weights, size, y)
    between = next(r for r in recs if r["small"] != r["large"])
    assert between.items() >= {"small": 1e6, "large": 4e6, "accuracy": 2 / 3}.items()
    assert (between["pairs"], between["mixtures"]) == (3, 3)
    # seed means at 4M 3.1, 1.9, 1.05: the first two lose more than at 1M
    assert between["rising"] == 2 and between["rise_max"] == pytest.approx(0.9)
    seeds = next(r for r in recs if r["small"] == r["large"])
    assert seeds["small"] == 4e6 and seeds["accuracy"] == 1.0
    assert any("seed vs seed" in line for line in describe(recs))


def test_realised_weights_that_differ_a_little_between_sizes_still_match():
    w = np.array([[0.7501, 0.2499], [0.5, 0.5]])
    w_large = np.array([[0.7498, 0.2502], [0.5003, 0.4997]])
    recs = decision_accuracy(np.r_[w, w_large], np.r_[1.0, 1.0, 2.0, 2.0], np.r_[1.0, 2, 1, 2])
    assert recs[0]["mixtures"] == 2
    # trial keys win over weights
    recs = decision_accuracy(
        np.r_[w, w_large], np.r_[1.0, 1, 2, 2], np.r_[1.0, 2, 2, 1], list("abba")
    )
    assert recs[0]["accuracy"] == 1.0


def _ladder(y_by_size: dict[float, list[float]]):
    w = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    sizes = sorted(y_by_size)
    weights = np.concatenate([w] * len(sizes))
    size = np.repeat(sizes, 3)
    return decision_accuracy(weights, size, np.concatenate([y_by_size[n] for n in sizes]))


def test_rising_warning_reads_the_two_largest_sizes_of_a_loss():
    # rising from 1M to 2M (1 mixture) is the past: only 2M -> 4M counts (2 mixtures)
    recs = _ladder({1e6: [2.0, 2.0, 2.0], 2e6: [2.1, 1.8, 1.7], 4e6: [2.0, 2.0, 1.8]})
    why = rising_warning("bpb.text", recs)
    assert "2 of 3 mixtures from 2e+06 to 4e+06" in why and "+11%" in why
    # a higher-is-better metric rising with size is no warning; nor is a fall
    assert rising_warning("tasks.arc.acc", recs) == ""
    assert rising_warning("bpb.text", _ladder({1e6: [2.0] * 3, 2e6: [1.9, 1.8, 1.99]})) == ""


def test_rising_warning_skips_records_from_before_it_was_recorded():
    recs = _ladder({1e6: [2.0] * 3, 2e6: [2.5] * 3})
    assert rising_warning("bpb.text", recs)
    old = [{k: v for k, v in r.items() if k not in ("rising", "rise_max")} for r in recs]
    assert rising_warning("bpb.text", old) == ""
