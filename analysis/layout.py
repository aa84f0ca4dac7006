"""Mixture layouts: how the weight columns of a run group into simplices, one per stage.

A run trained in stages (init, continual, cooldown) has one mixture per stage, each summing
to one. The analysis sees the stages' weights side by side, e.g. `mix.init.text,
mix.init.code, mix.cooldown.text, mix.cooldown.code` with groups (2, 2). A layout of one
group is a single static mixture, and every function here then reduces to the plain
Scheffe forms.

Within a group one weight is redundant (the others fix it). The Scheffe designs keep the
first group whole, which plays the part of the intercept, and drop the last column of every
later group, so that the terms are not collinear.

A group of one column is a free stage variable rather than a mixture (a simplex of one
weight would be constant): e.g. the cooldown's share of the tokens. It enters the designs
as it is, and the search draws it within the range the runs covered.
"""

from __future__ import annotations

import itertools

import numpy as np

from codemix.core.errors import CodemixError

__all__ = [
    "as_groups",
    "candidates",
    "check_groups",
    "is_free",
    "linear_design",
    "quadratic_design",
    "split_names",
]

Groups = tuple[int, ...] | None  # None: every column in one group


def _groups(w: np.ndarray, groups: Groups) -> tuple[int, ...]:
    g = (w.shape[1],) if groups is None else tuple(groups)
    if sum(g) != w.shape[1]:
        raise CodemixError(f"mixture groups {g} cover {sum(g)} columns; weights have {w.shape[1]}")
    return g


def as_groups(groups) -> tuple[int, ...] | None:
    """Group sizes as stored: None for one mixture of every column (the plain model)."""
    g = tuple(int(x) for x in groups or ())
    return g if len(g) > 1 else None


def check_groups(groups, n_cols: int) -> tuple[int, ...] | None:
    """Validated group sizes (see `as_groups`): a mixture (2+ columns) first, then mixtures
    or free variables (one column each), together covering `n_cols` columns."""
    g = tuple(int(x) for x in groups)
    if not g or g[0] < 2 or any(x < 1 for x in g) or sum(g) != n_cols:
        raise CodemixError(
            f"mixture groups {g} must start with a mixture of 2+ columns and cover all "
            f"{n_cols} columns"
        )
    return as_groups(g)


def is_free(groups: Groups, d: int) -> np.ndarray:
    """Which of the `d` columns are free stage variables (one-column groups)."""
    g = (d,) if groups is None else groups
    return np.concatenate([np.full(k, k == 1) for k in g])


def split_names(cols, groups: Groups) -> list[list[str]]:
    """The column names of each group."""
    cols = list(cols)
    g = (len(cols),) if groups is None else groups
    edges = np.cumsum((0, *g))
    return [cols[a:b] for a, b in zip(edges[:-1], edges[1:], strict=True)]


def linear_design(w: np.ndarray, groups: Groups = None) -> np.ndarray:
    """Scheffe-linear terms: the first group whole, later mixtures less their last column,
    free variables as they are."""
    g = _groups(w, groups)
    ends = np.cumsum(g)
    keep = list(range(g[0])) + [
        j
        for a, b in zip(ends[:-1], ends[1:], strict=True)
        for j in range(a, b if b - a == 1 else b - 1)
    ]
    return w[:, keep]


def quadratic_design(w: np.ndarray, groups: Groups = None) -> np.ndarray:
    """Scheffe-quadratic terms: the first group's weights, the pairwise products of all
    linear terms, and the squares of the later groups' terms. A later group's term on its
    own is left out: the first group sums to one, so its products with that term add up to it
    (and within the first group a square is not a new term either)."""
    g = _groups(w, groups)
    x = linear_design(w, g)
    iu, ju = np.triu_indices(x.shape[1], 1)
    return np.hstack([x[:, : g[0]], x[:, iu] * x[:, ju], x[:, g[0] :] ** 2])


def candidates(
    groups: tuple[int, ...],
    n: int = 4000,
    seed: int = 0,
    lo: np.ndarray | None = None,
    hi: np.ndarray | None = None,
) -> np.ndarray:
    """Mixtures to search: every combination of each group's vertices and centre, then `n`
    Dirichlet(1) draws per group. With bounds `lo`/`hi` (per column, e.g. the range the
    runs covered) only mixtures inside them are kept, drawing more until `n` are found.
    Free variables take their bounds, mid-point and uniform draws between (they need
    `lo` and `hi`)."""
    rng = np.random.default_rng(seed)
    d = sum(groups)
    free = is_free(groups, d)
    if free.any() and (lo is None or hi is None):
        raise CodemixError("free stage variables need the range to search (lo and hi)")
    lo_f = None if lo is None else np.asarray(lo, float)[free]
    hi_f = None if hi is None else np.asarray(hi, float)[free]
    f_at = iter(range(int(free.sum())))

    def corner(k: int) -> np.ndarray:
        if k > 1:
            return np.vstack([np.eye(k), np.full((1, k), 1.0 / k)])
        j = next(f_at)
        return np.array([[lo_f[j]], [hi_f[j]], [(lo_f[j] + hi_f[j]) / 2]])

    def draw(m: int) -> np.ndarray:
        parts, j = [], 0
        for k in groups:
            if k > 1:
                parts.append(rng.dirichlet(np.ones(k), m))
            else:
                parts.append(rng.uniform(lo_f[j], hi_f[j], (m, 1)))
                j += 1
        return np.hstack(parts)

    corners = [corner(k) for k in groups]
    combos = list(itertools.product(*[range(len(c)) for c in corners]))
    if len(combos) > n:
        combos = [combos[i] for i in sorted(rng.choice(len(combos), n, replace=False))]
    fixed = np.array(
        [np.concatenate([c[i] for c, i in zip(corners, ix, strict=True)]) for ix in combos]
    )
    if lo is None and hi is None:
        return np.vstack([fixed, draw(n)])
    lo = np.full(d, -np.inf) if lo is None else np.asarray(lo, float) - 1e-9
    hi = np.full(d, np.inf) if hi is None else np.asarray(hi, float) + 1e-9

    def inside(w: np.ndarray) -> np.ndarray:
        return w[np.all((w >= lo) & (w <= hi), axis=1)]

    kept, found = [inside(fixed)], 0
    for _ in range(200):
        draws = inside(draw(n))
        kept.append(draws[: n - found])
        found += len(kept[-1])
        if found >= n:
            break
    out = np.vstack(kept)
    if not len(out):
        raise CodemixError("no mixture lies inside the weight ranges the runs covered")
    return out
