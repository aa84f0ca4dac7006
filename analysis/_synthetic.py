"""Ladders of runs drawn from a known data-constrained law, for checking fits and their
intervals (tests and `benchmarks/law_transfer.py --synthetic`).

Two domains, text and code; the code share c of one stage varies. Every size trains on
`tokens_per_param` tokens per parameter from a corpus of fixed unique tokens per domain, so
the text repeats more at larger sizes and smaller code shares: the regime where a law
without a data term goes wrong one size up.
"""

from __future__ import annotations

import numpy as np

from codemix.analysis.datalaw import RunData

DOMAINS = ("text", "code")
TRUE = {"e": (0.45, 0.75), "a": (3.2, 3.5), "alpha": 0.3, "b": 4.0, "beta": 0.3, "g": 0.3}


def law_loss(c, n, d_tokens, epochs, r_star=5.0) -> np.ndarray:
    """The true text loss: exp(e.x) + exp(a.x) N^-alpha + exp(b) S^-beta (`r_star`: one for
    both domains, or one each)."""
    x = np.c_[1 - c, c]
    excess = np.maximum(epochs - 1.0, 0.0)
    phi = np.where(
        epochs > 1, (1 + r_star * (1 - np.exp(-excess / r_star))) / np.maximum(epochs, 1), 1.0
    )
    s = d_tokens[:, 0] * phi[:, 0] + TRUE["g"] * d_tokens[:, 1] * phi[:, 1]
    t = TRUE
    return (
        np.exp(x @ np.array(t["e"]))
        + np.exp(x @ np.array(t["a"])) * n ** -t["alpha"]
        + np.exp(t["b"]) * s ** -t["beta"]
    )


def ladder(
    sizes=(1e6, 2e6, 4e6, 8e6),
    shares=(0.05, 0.18, 0.31, 0.44, 0.56, 0.69, 0.82, 0.95),
    unique=(3e6, 3e7),
    tokens_per_param: float = 10.0,
    noise: float = 0.01,
    seed: int = 0,
    r_star=5.0,
    overfit: float = 0.0,
):
    """(code shares as (runs, 2) weights, N, loss, RunData) for every size and share.
    `overfit`: the log loss rises by that much an extra text epoch past 10, a loss the law
    has no term for (to check the error bars of reading the text more than a ladder did)."""
    rng = np.random.default_rng(seed)
    c = np.tile(np.asarray(shares, float), len(sizes))
    n = np.repeat(np.asarray(sizes, float), len(shares))
    d = n * tokens_per_param
    d_tokens = np.c_[d * (1 - c), d * c]
    epochs = d_tokens / np.asarray(unique, float)[None, :]
    loss = law_loss(c, n, d_tokens, epochs, r_star) * np.exp(noise * rng.standard_normal(len(n)))
    loss *= np.exp(overfit * np.maximum(epochs[:, 0] - 10.0, 0.0))
    return np.c_[1 - c, c], n, loss, RunData(DOMAINS, d_tokens, epochs)


STAGED = {"tau": 2e7, "C": 0.01, "kappa": 1.5}  # recency in tokens; the overfitting term
FORGET = {"F": 0.3, "nu": 0.65, "scale": 1e8}  # a code-free cooldown: log L += F (A/scale)^nu
# a code-free cooldown moves log L toward log H (N / n0)^h exp(e E), a model that never saw
# code (E its extra text epochs), by 1 - exp(-(A / tau)^nu), tau = tau0 (N / n0)^mu
# the overfitting term times sigmoid(zeta log(N / mid)): half its ceiling at "4M"
OVERFIT_N = {"zeta": 1.5, "mid": 4e6}
# with `overfit_fall`, the term rises to half its ceiling at "1.5M" and then falls as
# (1 + N / mid)^-eta: it peaks near "2M" and "8M" is below "4M", as the matched ladders went
OVERFIT_FALL = {"eta": 1.0, "mid": 1.5e6}
REVERT = {"H": 4.0, "h": 0.03, "e": 0.02, "tau0": 1.6e7, "mu": 0.5, "nu": 1.5, "n0": 4e6}


def staged_ladder(
    sizes=(1e6, 2e6, 4e6, 8e6),
    shares=(0.05, 0.3, 0.55, 0.8),
    cooldown: float = 0.2,
    unique=(1e7, 3e7),
    tokens_per_param: float = 10.0,
    noise: float = 0.0,
    seed: int = 0,
    forget: bool = False,
    revert: bool = False,
    overfit_n: bool = False,
    overfit_fall: bool = False,
):
    """Two stages (init, then a cooldown of `cooldown` of the tokens), every pair of code
    shares at every size, drawn from the data law with both optional terms: each stage's
    tokens fade as exp(-tokens after it / tau), and C rbar^kappa for repetition (STAGED).
    With `forget`, a run whose cooldown has no code (and whose init has some) loses
    exp(F (cooldown tokens / scale)^nu) on top (FORGET); with `revert`, its log loss goes part
    of the way toward that of a model that never saw code, which is a run without code
    (REVERT); with `overfit_n`, the overfitting term grows with N to a ceiling (OVERFIT_N),
    and with `overfit_fall` too, falls again past it (OVERFIT_FALL).
    Returns (weights (runs, 4): init text, code, cooldown text, code; N; loss;
    RunData)."""
    rng = np.random.default_rng(seed)
    c1, c2 = (a.ravel() for a in np.meshgrid(shares, shares))
    c1, c2 = np.tile(c1, len(sizes)), np.tile(c2, len(sizes))
    n = np.repeat(np.asarray(sizes, float), len(shares) ** 2)
    d = n * tokens_per_param
    d1, d2 = d * (1 - cooldown), d * cooldown
    stage_tokens = np.stack([np.c_[d1 * (1 - c1), d1 * c1], np.c_[d2 * (1 - c2), d2 * c2]], 1)
    after = np.c_[d2, np.zeros_like(d2)]
    tokens = stage_tokens.sum(1)
    epochs = tokens / np.asarray(unique, float)[None, :]
    t, s = TRUE, STAGED
    faded = stage_tokens[:, 0] * np.exp(-d2 / s["tau"])[:, None] + stage_tokens[:, 1]
    excess = np.maximum(epochs - 1.0, 0.0)
    r = 5.0
    phi = np.where(epochs > 1, (1 + r * (1 - np.exp(-excess / r))) / np.maximum(epochs, 1), 1.0)
    wk = np.array([1.0, t["g"]])
    eff = (faded * phi) @ wk
    share = tokens * wk / (tokens @ wk)[:, None]
    rbar = (share * excess).sum(1)
    grow = 1.0  # with `overfit_n`, a larger model overfits more, up to a ceiling
    if overfit_n:
        mid = OVERFIT_FALL["mid"] if overfit_fall else OVERFIT_N["mid"]
        grow = 1.0 / (1.0 + (mid / n) ** OVERFIT_N["zeta"])
        if overfit_fall:
            grow = grow * (1.0 + n / mid) ** -OVERFIT_FALL["eta"]
    x = np.c_[1 - c1, c1]
    loss = (
        np.exp(x @ np.array(t["e"]))
        + np.exp(x @ np.array(t["a"])) * n ** -t["alpha"]
        + np.exp(t["b"]) * eff ** -t["beta"]
        + s["C"] * rbar ** s["kappa"] * grow
    ) * np.exp(noise * rng.standard_normal(len(n)))
    if forget:
        f = FORGET
        loss *= np.exp(np.where((c2 == 0) & (c1 > 0), f["F"] * (d2 / f["scale"]) ** f["nu"], 0.0))
    if revert:
        r = REVERT
        extra = np.maximum(epochs[:, 0] - 1.0, 0.0)
        level = np.log(r["H"] * (n / r["n0"]) ** r["h"]) + r["e"] * extra
        u = (d2 / (r["tau0"] * (n / r["n0"]) ** r["mu"])) ** r["nu"]
        phi = np.where(c2 == 0, np.where(c1 > 0, -np.expm1(-u), 1.0), 0.0)
        loss = np.exp((1 - phi) * np.log(loss) + phi * level)
    w = np.c_[1 - c1, c1, 1 - c2, c2]
    return w, n, loss, RunData(DOMAINS, tokens, epochs, stage_tokens, after)


def export_table(w, n, y, rd: RunData, metric: str = "bpb.text"):
    """A staged ladder as a study export names its columns (a polars table): the mixtures,
    non-embedding parameters, tokens in all and per stage, epochs per domain, and `metric`."""
    import polars as pl

    cols = ("mix.init.text", "mix.init.code", "mix.cooldown.text", "mix.cooldown.code")
    st = rd.stage_tokens.sum(2)
    return pl.DataFrame(
        {c: w[:, i] for i, c in enumerate(cols)}
        | {
            "non_embedding_params": n,
            "tokens": rd.tokens.sum(1),
            "tokens.init": st[:, 0],
            "tokens.cooldown": st[:, 1],
            "epochs.text": rd.epochs[:, 0],
            "epochs.code": rd.epochs[:, 1],
            metric: y,
        }
    )
