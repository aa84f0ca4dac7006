"""Mixture layouts: Scheffe designs over one or several stages' mixtures, search candidates."""

from __future__ import annotations

import numpy as np
import pytest

from codemix.analysis.layout import (
    candidates,
    check_groups,
    is_free,
    linear_design,
    quadratic_design,
    split_names,
)
from codemix.core.errors import CodemixError


def _two_stage(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.hstack([rng.dirichlet(np.ones(3), n), rng.dirichlet(np.ones(2), n)])


def test_one_group_is_the_plain_scheffe_design():
    w = np.random.default_rng(0).dirichlet(np.ones(3), 10)
    assert np.array_equal(linear_design(w), w)
    q = quadratic_design(w)
    assert q.shape == (10, 6)
    assert np.allclose(q[:, 3], w[:, 0] * w[:, 1]) and np.allclose(q[:, 5], w[:, 1] * w[:, 2])


def test_several_groups_drop_one_column_per_later_group_and_stay_full_rank():
    w = _two_stage(40)
    x = linear_design(w, (3, 2))
    assert np.array_equal(x, w[:, :4])
    assert np.linalg.matrix_rank(x) == 4
    # with both of the second group's columns the terms would be collinear
    assert np.linalg.matrix_rank(w) == 4
    q = quadratic_design(w, (3, 2))
    assert q.shape == (40, 3 + 6 + 1)  # first group, pairs, the square of the later group's term
    assert np.linalg.matrix_rank(q) == q.shape[1]


def test_groups_are_checked():
    assert check_groups([2, 3], 5) == (2, 3)
    assert check_groups([2, 2, 1], 5) == (2, 2, 1)  # a free stage variable last
    for bad in ([2, 2], [1, 4], [], [2, 0, 3]):
        with pytest.raises(CodemixError, match="groups"):
            check_groups(bad, 5)
    with pytest.raises(CodemixError, match="cover"):
        linear_design(_two_stage(3), (2, 2))
    assert split_names(list("abcde"), (3, 2)) == [["a", "b", "c"], ["d", "e"]]
    assert split_names(list("abc"), None) == [["a", "b", "c"]]


def test_candidates_cover_each_simplex_and_its_corners():
    w = candidates((3, 2), 500, seed=1)
    assert np.allclose(w[:, :3].sum(1), 1) and np.allclose(w[:, 3:].sum(1), 1)
    assert len(w) == 4 * 3 + 500  # (3 vertices + centre) x (2 vertices + centre), then draws
    assert any(np.allclose(r, [0, 1, 0, 0, 1]) for r in w)
    one = candidates((3,), 100, seed=2)
    assert np.allclose(one[:4], np.vstack([np.eye(3), np.full(3, 1 / 3)]))


def test_candidates_within_bounds():
    lo = np.array([0.2, 0.0, 0.0, 0.4, 0.0])
    hi = np.array([1.0, 0.5, 1.0, 1.0, 0.6])
    w = candidates((3, 2), 300, seed=0, lo=lo, hi=hi)
    assert len(w) >= 300
    assert np.all(w >= lo - 1e-9) and np.all(w <= hi + 1e-9)
    with pytest.raises(CodemixError, match="no mixture"):
        candidates((2,), 50, lo=np.array([0.8, 0.8]), hi=np.array([1.0, 1.0]))


def test_a_one_column_group_is_a_free_variable():
    rng = np.random.default_rng(4)
    w = np.c_[rng.dirichlet(np.ones(2), 30), rng.uniform(0.1, 0.3, 30)]
    assert is_free((2, 1), 3).tolist() == [False, False, True]
    assert np.array_equal(linear_design(w, (2, 1)), w)  # kept whole, not dropped
    q = quadratic_design(w, (2, 1))
    assert q.shape == (30, 2 + 3 + 1) and np.linalg.matrix_rank(q) == 6
    lo, hi = np.array([0.0, 0.0, 0.1]), np.array([1.0, 1.0, 0.3])
    c = candidates((2, 1), 200, 0, lo, hi)
    assert np.all((c[:, 2] >= 0.1 - 1e-9) & (c[:, 2] <= 0.3 + 1e-9))
    assert np.allclose(c[:, :2].sum(1), 1) and len(np.unique(c[:, 2])) > 100
    with pytest.raises(CodemixError, match="range"):
        candidates((2, 1), 10)
