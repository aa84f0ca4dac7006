"""Decision accuracy: pairs of mixtures ranked alike by two sizes, and seed against seed."""

from __future__ import annotations

import numpy as np
import pytest

from codemix.analysis.decision import decision_accuracy, describe, pair_agreement


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
    assert between == {"small": 1e6, "large": 4e6, "accuracy": 2 / 3, "pairs": 3, "mixtures": 3}
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
