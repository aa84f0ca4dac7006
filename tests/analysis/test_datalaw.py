"""The data-constrained mixture law: its gradient, its fit and intervals on ladders drawn from
a known law, its FIT.json round trip, the table columns it reads and the target data it takes."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import polars as pl
import pytest

from codemix.analysis import _synthetic
from codemix.analysis._lawterms import _Layout, _objective, _tangent, _terms
from codemix.analysis.contest import (
    choose_size_law,
)
from codemix.analysis.datalaw import DataLawFit, RunData, TargetData, fit_data_law
from codemix.analysis.fitfile import FitFile, load_fit, save_fit
from codemix.analysis.optimum import _draws as _optimum_draws
from codemix.analysis.scaling import ScalingConfig, _law_design, fit_joint_law
from codemix.analysis.tables import load_results
from codemix.core.errors import CodemixError

COLS = ("text", "code")
LADDER = (1e6, 2e6, 4e6, 8e6, 1.6e7)


def _split(n):
    """Runs below the ladder's largest size (fitted) and at it (held out)."""
    test = n == max(LADDER)
    return ~test, test


@pytest.fixture(scope="module")
def noisy_law():
    """A data law with a small bootstrap, fitted on the default (noisy) ladder."""
    w, n, y, rd = _synthetic.ladder(noise=0.01, seed=0)
    return fit_data_law(w, n, y, rd, COLS, (1.0,), n_boot=5, seed=0)


def _central(f, theta, h=1e-6):
    """Central finite differences of a scalar function."""
    out = np.empty_like(theta)
    for i in range(len(theta)):
        step = np.zeros_like(theta)
        step[i] = h
        out[i] = (f(theta + step) - f(theta - step)) / (2 * h)
    return out


@pytest.mark.parametrize("shared", [True, False])
def test_objective_gradient_matches_finite_differences(shared):
    w, n, y, rd = _synthetic.ladder(noise=0.0)
    assert np.any(rd.epochs > 1) and np.any(rd.epochs < 1)  # both branches of phi
    xe, xa = _law_design(w, None, "linear")
    lay = _Layout(xe.shape[1], xa.shape[1], len(rd.domains), shared)
    rng = np.random.default_rng(1)
    far = np.r_[
        np.log(0.6) + 0.3 * rng.standard_normal(lay.ke),
        3.0 + 0.3 * rng.standard_normal(lay.ka),
        0.3,
        4.0,
        0.3,
        0.3 * rng.standard_normal(lay.k - 1),
        np.log(5.0) + 0.3 * rng.standard_normal(lay.n - lay.i_rho),
    ]
    t = _synthetic.TRUE
    truth = np.r_[
        t["e"],
        t["a"],
        t["alpha"],
        t["b"],
        t["beta"],
        np.log(t["g"]),
        np.full(lay.n - lay.i_rho, np.log(5.0)),
    ]
    near = truth + 4e-4 * np.random.default_rng(2).standard_normal(lay.n)
    args = (lay, xe, xa, np.log(n), rd, np.log(y), 1e-3)
    # the ladder's true parameters fit it exactly: the same law, the same parametrisation
    assert _objective(truth, *args)[0] == pytest.approx(0.0, abs=1e-20)
    for theta in (far, near):
        assert len(theta) == lay.n
        _, grad = _objective(theta, *args)
        numeric = _central(lambda th: _objective(th, *args)[0], theta)
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-10)
        # every parameter matters here, R* included: a zero column would hide a missing term
        assert np.all(np.abs(numeric) > 1e-8)
    # near the truth, some residuals sit inside the Huber delta and some outside
    z, _ = _terms(near, lay, xe, xa, np.log(n), rd)
    inside = np.abs(np.log(np.exp(z).sum(0)) - np.log(y)) < 1e-3
    assert 0 < inside.sum() < len(y)


def test_noise_free_ladder_extrapolates_one_size_up():
    w, n, y, rd = _synthetic.ladder(sizes=LADDER, noise=0.0)
    fit, test = _split(n)
    law = fit_data_law(w[fit], n[fit], y[fit], rd.take(fit), COLS, (1.0,))
    pred = law.predict(w[test], n[test], rd.take(test))
    err = np.max(np.abs(pred / y[test] - 1))
    joint = fit_joint_law(w[fit], n[fit], y[fit], COLS, ScalingConfig(n_boot=0))
    err_joint = np.max(np.abs(joint.predict(w[test], max(LADDER)) / y[test] - 1))
    # measured: ~1e-7 against ~1.4e-2 for the law without a data term
    assert err < 1e-2
    assert err_joint > 5e-3
    assert err < err_joint / 10
    p = law.params
    assert p["alpha"] == pytest.approx(_synthetic.TRUE["alpha"], abs=1e-3)
    assert p["beta"] == pytest.approx(_synthetic.TRUE["beta"], abs=1e-3)
    assert (law.alpha, law.beta) == (p["alpha"], p["beta"])  # what `fit` checks for warnings
    assert p["domain_weight"]["code"] == pytest.approx(_synthetic.TRUE["g"], rel=1e-3)
    assert p["R_star"]["text"] == pytest.approx(5.0, rel=1e-2)


def test_intervals_cover_the_next_size_up():
    inside = total = 0
    for seed in (0, 1):
        w, n, y, rd = _synthetic.ladder(sizes=LADDER, noise=0.01, seed=seed)
        fit, test = _split(n)
        cfg = ScalingConfig(n_boot=20, seed=seed)
        law = choose_size_law(
            w[fit], n[fit], y[fit], rd.take(fit), COLS, (1.0,), config=cfg, law="joint_data"
        )
        assert isinstance(law, DataLawFit)
        assert law.selection["data_law"]["chosen"] == "joint_data"
        assert law.extrapolation_step == pytest.approx(np.log(2))
        mean, lo, hi = law.interval(w[test], n[test], data=rd.take(test))
        assert np.all(lo <= mean) and np.all(mean <= hi)
        inside += int(np.sum((y[test] >= lo) & (y[test] <= hi)))
        total += int(test.sum())
    # nominal 0.9; measured 15 of 16 for these seeds (146 of 160, 0.91, for seeds 0-19)
    assert 0.85 <= inside / total <= 0.95


def test_repetition_error_grows_with_the_epochs_beyond_the_ladder(noisy_law):
    most = noisy_law.ladder_epochs["text"]
    assert most == pytest.approx(25.33, rel=1e-3)  # 8e7 tokens, 95 % text, of 3e6
    w = np.array([[0.9, 0.1]] * 4)
    epochs = np.c_[most * np.array([0.5, 1.0, 1.0, 1.0]) + [0, 0, 5, 10], [0.1] * 4]
    data = TargetData(epochs=epochs)
    np.testing.assert_array_equal(noisy_law.repetition(w, 8e6, data), 0.0)  # none calibrated
    law = dataclasses.replace(noisy_law, repetition_sd=0.01)
    np.testing.assert_allclose(law.repetition(w, 8e6, data), [0.0, 0.0, 0.05, 0.1])
    _, lo0, hi0 = noisy_law.interval(w, 8e6, data=data)
    _, lo, hi = law.interval(w, 8e6, data=data)
    # within the ladder's epochs the intervals are as before; beyond, wider the further
    np.testing.assert_allclose(np.c_[lo, hi][:2], np.c_[lo0, hi0][:2])
    width, width0 = np.log(hi / lo), np.log(hi0 / lo0)
    assert 0 < (width - width0)[2] < (width - width0)[3]


def test_to_dict_round_trip_keeps_predictions_and_intervals(noisy_law, tmp_path):
    law = dataclasses.replace(
        noisy_law, extrapolation_sd=0.03, extrapolation_step=np.log(2), repetition_sd=0.01
    )
    back = DataLawFit.from_dict(json.loads(json.dumps(law.to_dict())))
    assert back.form == "joint_data" and back.domains == law.domains
    assert back.repetition_sd == 0.01
    np.testing.assert_array_equal(back.theta, law.theta)
    np.testing.assert_array_equal(back.boot, law.boot)
    w, n, y, rd = _synthetic.ladder(sizes=(1e6, 3.2e7), noise=0.0)
    target = TargetData(tokens=2e8, unique={"text": 1e6})
    for data in (None, rd, target):
        np.testing.assert_array_equal(back.predict(w, n, data), law.predict(w, n, data))
        a, b = law.interval(w, n, data=data), back.interval(w, n, data=data)
        assert np.all(np.isfinite(a))
        np.testing.assert_array_equal(np.array(b), np.array(a))
    # and through FIT.json, which tells the two size laws apart by their form
    save_fit(FitFile(COLS, {}, scaling={"bpb": law}), tmp_path / "FIT.json")
    again = load_fit(tmp_path / "FIT.json").scaling["bpb"]
    assert isinstance(again, DataLawFit)
    np.testing.assert_array_equal(
        np.array(again.interval(w, n, data=rd)), np.array(law.interval(w, n, data=rd))
    )


def _export(n: int = 4) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    init, cool = rng.uniform(0.1, 0.9, n), rng.uniform(0.1, 0.9, n)
    t_init, t_cool = rng.uniform(1e8, 2e8, n), rng.uniform(1e7, 5e7, n)
    return pl.DataFrame(
        {
            "mix.init.text": 1 - init,
            "mix.init.code": init,
            "mix.cooldown.text": 1 - cool,
            "mix.cooldown.code": cool,
            "tokens.init": t_init,
            "tokens.cooldown": t_cool,
            "tokens": t_init + t_cool,
            "epochs.text": rng.uniform(0.5, 4.0, n),
            "epochs.code": rng.uniform(0.5, 4.0, n),
            "params": np.full(n, 1e7),
            "bpb.text": rng.uniform(0.8, 1.2, n),
        }
    )


def test_load_results_reads_each_domains_tokens_and_epochs(tmp_path):
    df = _export()
    path = tmp_path / "export.csv"
    df.write_csv(path)
    kw = dict(size_col="params", tokens_col="tokens")
    t = load_results(path, ["mix.init.*", "mix.cooldown.*"], ["bpb.text"], **kw)
    rd = t.run_data
    assert isinstance(rd, RunData) and rd.domains == ("text", "code")
    for k, d in enumerate(rd.domains):
        want = sum(df[f"tokens.{st}"] * df[f"mix.{st}.{d}"] for st in ("init", "cooldown"))
        np.testing.assert_allclose(rd.tokens[:, k], want.to_numpy())
        np.testing.assert_allclose(rd.epochs[:, k], df[f"epochs.{d}"].to_numpy())
    np.testing.assert_allclose(rd.tokens.sum(1), df["tokens"].to_numpy())
    fracs = np.c_[df["tokens.init"] / df["tokens"], df["tokens.cooldown"] / df["tokens"]]
    np.testing.assert_allclose(t.stage_fracs, fracs)
    # each stage's tokens, and the tokens after it in training order (tokens.* columns' order)
    np.testing.assert_allclose(rd.stage_tokens.sum((1, 2)), df["tokens"].to_numpy())
    cool_code = df["tokens.cooldown"] * df["mix.cooldown.code"]
    np.testing.assert_allclose(rd.stage_tokens[:, 1, 1], cool_code.to_numpy())
    np.testing.assert_allclose(rd.after, np.c_[df["tokens.cooldown"], np.zeros(len(df))])
    # a stage not fitted (a fixed cooldown) still trained on its tokens
    only_init = load_results(path, "mix.init.*", ["bpb.text"], **kw)
    np.testing.assert_allclose(only_init.run_data.tokens, rd.tokens)
    assert only_init.run_data.stage_tokens is None  # the recency term needs every stage
    # a domain of the mixture without its epochs is named
    df.drop("epochs.code").write_csv(path)
    with pytest.raises(CodemixError, match="no epochs column for domain 'code'"):
        load_results(path, ["mix.init.*", "mix.cooldown.*"], ["bpb.text"], **kw)
    df.write_csv(path)
    with pytest.raises(CodemixError, match="no epochs column for domain 'code'"):
        load_results(
            path, ["mix.init.*", "mix.cooldown.*"], ["bpb.text"], epochs_cols="epochs.text", **kw
        )


def test_target_data_sets_epochs_and_extrapolation_grows_in_log_n(noisy_law):
    law = noisy_law
    w = np.array([[0.8, 0.2], [0.3, 0.7]])
    rd = law.run_data(w, 1e8, TargetData(tokens=1e9, unique={"text": 2e8}))
    np.testing.assert_allclose(rd.tokens, 1e9 * w)
    np.testing.assert_allclose(rd.epochs[:, 0], 1e9 * w[:, 0] / 2e8)
    np.testing.assert_allclose(rd.epochs[:, 1], 1e9 * w[:, 1] / law.unique["code"])
    assert law.unique["code"] == pytest.approx(3e7)  # the ladder's corpus
    # each row's own epochs, for runs already trained, are taken as they are
    own = np.array([[2.0, 0.5], [1.0, 3.0]])
    np.testing.assert_array_equal(law.run_data(w, 1e8, TargetData(epochs=own)).epochs, own)
    # no target tokens: the proxies' tokens per parameter times N
    assert law.tokens_per_param == pytest.approx(10.0)
    np.testing.assert_allclose(law.run_data(w, 1e8).tokens.sum(1), 1e9)
    top = max(law.sizes)
    assert top == 8e6
    sizes = top * np.array([0.5, 1.0, 2.0, 4.0, 8.0])
    np.testing.assert_array_equal(law.extrapolation(sizes), 0.0)  # no spread calibrated
    grown = dataclasses.replace(law, extrapolation_sd=0.02, extrapolation_step=np.log(2))
    np.testing.assert_allclose(grown.extrapolation(sizes), [0.0, 0.0, 0.02, 0.04, 0.06])
    assert grown.extrapolation(top * np.sqrt(2)) == pytest.approx(0.01)  # half a step
    no_step = dataclasses.replace(grown, extrapolation_step=float("nan"))
    np.testing.assert_array_equal(no_step.extrapolation(sizes), 0.0)
    # the extra spread widens intervals beyond the largest size only
    at = dict(n_params=top, data=TargetData(tokens=1e8))
    np.testing.assert_allclose(grown.interval(w, **at), law.interval(w, **at))
    far = dict(n_params=8 * top, data=TargetData(tokens=8e8))
    _, lo, hi = law.interval(w, **far)
    _, lo2, hi2 = grown.interval(w, **far)
    assert np.all(np.log(hi2 / lo2) > np.log(hi / lo))


STAGE_COLS = ("mix.init.text", "mix.init.code", "mix.cooldown.text", "mix.cooldown.code")


@pytest.mark.parametrize(
    "extra",
    [
        ("recency",),
        ("overfit",),
        ("recency", "overfit"),
        ("forget",),
        ("overfit", "forget"),
        ("revert",),
        ("recency", "overfit", "revert"),
        ("overfit_linear",),
        ("recency", "overfit_linear", "forget"),
        ("overfit_linear", "revert"),
        ("overfit", "overfit_n"),
        ("recency", "overfit", "revert", "overfit_n"),
        ("overfit", "overfit_n", "overfit_fall"),
    ],
)
def test_extra_terms_gradient_matches_finite_differences(extra):
    w, n, y, rd = _synthetic.staged_ladder(sizes=(1e6, 4e6), shares=(0.0, 0.3, 0.6), forget=True)
    xe, xa = _law_design(w, (2, 2), "linear")
    scale = float(np.median(rd.tokens.sum(1)))
    lay = _Layout(xe.shape[1], xa.shape[1], 2, False, extra, scale, np.log(2e6))
    rng = np.random.default_rng(3)
    theta = np.r_[
        np.log(0.6) + 0.3 * rng.standard_normal(lay.ke),
        3.0 + 0.3 * rng.standard_normal(lay.ka),
        [0.3, 4.0, 0.3],
        0.3 * rng.standard_normal(lay.k - 1),
        np.log(5.0) + 0.3 * rng.standard_normal(lay.i_lam - lay.i_rho),
        [0.5] * lay.recency,
        [np.log(0.01), 1.5] * lay.overfit,
        [-1.0, -2.0, 0.6] * lay.forget,
        [0.3, 0.7, 1.5, 1.2, 0.1, -0.2, -0.5, 0.4, 1.2, 0.2, 0.3] * lay.revert,
        [1.2, np.log(2e6)] * lay.size,
        [0.7] * lay.fall,
    ]
    args = (lay, xe, xa, np.log(n), rd, np.log(y), 1.0)
    _, grad = _objective(theta, *args)
    numeric = _central(lambda th: _objective(th, *args)[0], theta)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-10)
    # the new parameters all matter, but text's forgetting: no run here lacks text
    text = [lay.i_f] if lay.forget else [lay.i_r + j * 2 for j in (0, 1, 2)] if lay.revert else []
    if lay.revert:  # and the slope of text's never-seen loss
        text.append(lay.i_r + 3 * lay.k + 3)
    new = np.delete(np.arange(lay.i_lam, lay.n), np.subtract(text, lay.i_lam).astype(int))
    assert np.all(np.abs(numeric[new]) > 1e-8)


def _largest_size_errors(w, n, y, rd, extras):
    """The worst relative error at the ladder's largest size of the data law with each set
    of optional terms, fitted on the sizes below; and the last law fitted. The synthetic
    ladders draw the overfitting term as a power, which the fit then keeps past the ladder's
    epochs (the largest size reads the text twice as often)."""
    fit, test = _split(n)
    err = {}
    for extra in extras:
        law = fit_data_law(
            w[fit],
            n[fit],
            y[fit],
            rd.take(fit),
            STAGE_COLS,
            (0.8, 0.2),
            groups=(2, 2),
            extra=extra,
            overfit_past="power",
        )
        err[extra] = np.max(np.abs(law.predict(w[test], n[test], rd.take(test)) / y[test] - 1))
    return err, law


def test_recency_and_overfit_terms_extrapolate_a_staged_ladder():
    """Drawn from a law whose earlier stages fade and whose loss rises with repetition: the
    plain data law misses the next size up by 15 %, the law with both terms by under 1 %."""
    w, n, y, rd = _synthetic.staged_ladder(sizes=LADDER)
    both = ("recency", "overfit")
    # the largest size reads the text twice as often as the ladder (15 against 7.6): the
    # drawn law's power holds there, and its tangent falls short
    err, law = _largest_size_errors(w, n, y, rd, [(), both])
    # measured: 0.15 and 0.005; along the tangent 0.027
    assert err[()] > 0.05
    assert err[both] < 0.01
    test = _split(n)[1]
    tangent = dataclasses.replace(law, overfit_past="tangent")
    assert np.max(np.abs(tangent.predict(w[test], n[test], rd.take(test)) / y[test] - 1)) > 0.01
    p = law.params
    assert law.name == "joint_data+recency+overfit"
    assert p["overfit_kappa"] == pytest.approx(_synthetic.STAGED["kappa"], rel=0.2)
    assert 0.3 < p["tau_tokens"] / _synthetic.STAGED["tau"] < 3
    # a prediction at the target builds each stage's tokens and what came after them
    rd_t = law.run_data(w[:2], 1e8, TargetData(tokens=1e9))
    np.testing.assert_allclose(rd_t.stage_tokens.sum((1, 2)), 1e9)
    np.testing.assert_allclose(rd_t.after, np.c_[[2e8, 2e8], [0.0, 0.0]])
    # FIT.json keeps the terms and the predictions
    back = DataLawFit.from_dict(json.loads(json.dumps(law.to_dict())))
    assert back.extra == ("recency", "overfit") and back.stage_order == (0, 1)
    np.testing.assert_array_equal(back.predict(w, n, rd), law.predict(w, n, rd))
    np.testing.assert_array_equal(back.predict(w, 1e8), law.predict(w, 1e8))


def test_overfit_n_extrapolates_an_overfitting_that_grows_with_size():
    """Drawn with an overfitting term that grows with N to a ceiling (half of it at "4M"):
    the law without that growth misses the next size up, the law with it recovers it."""
    w, n, y, rd = _synthetic.staged_ladder(sizes=LADDER, overfit_n=True)
    both, grown = ("recency", "overfit"), ("recency", "overfit", "overfit_n")
    err, law = _largest_size_errors(w, n, y, rd, [both, grown])
    # measured: 0.011 and 0.0002 (zeta 1.50, mid 3.96e6 fitted)
    assert err[both] > 0.005
    assert err[grown] < 0.002
    p, true = law.params, _synthetic.OVERFIT_N
    assert law.name == "joint_data+recency+overfit+overfit_n"
    assert p["overfit_n_zeta"] == pytest.approx(true["zeta"], rel=0.2)
    assert p["overfit_n_mid"] == pytest.approx(true["mid"], rel=0.3)
    back = DataLawFit.from_dict(json.loads(json.dumps(law.to_dict())))
    np.testing.assert_array_equal(back.predict(w, n, rd), law.predict(w, n, rd))
    with pytest.raises(CodemixError, match="it needs overfit"):
        fit_data_law(w, n, y, rd, STAGE_COLS, (0.8, 0.2), groups=(2, 2), extra=("overfit_n",))


def test_overfit_fall_extrapolates_an_overfitting_that_peaks_with_size():
    """Drawn with an overfitting term that rises with N to a peak near "2M" and falls by
    "8M": the law whose term only rises misses the next size up by more than twice what
    the law with the fall does."""
    w, n, y, rd = _synthetic.staged_ladder(sizes=LADDER, overfit_n=True, overfit_fall=True)
    grown = ("recency", "overfit", "overfit_n")
    fall = (*grown, "overfit_fall")
    err, law = _largest_size_errors(w, n, y, rd, [grown, fall])
    # measured: 0.0056 and 0.0014 (eta 0.83, mid 1.28e6 fitted; zeta, 3.0 against 1.5, is
    # the least pinned: four sizes see the rise only between "1M" and "2M")
    assert err[grown] > 0.004
    assert err[fall] < 0.002
    p, true = law.params, _synthetic.OVERFIT_FALL
    assert p["overfit_fall_eta"] == pytest.approx(true["eta"], rel=0.3)
    assert p["overfit_n_mid"] == pytest.approx(true["mid"], rel=0.3)
    back = DataLawFit.from_dict(json.loads(json.dumps(law.to_dict())))
    np.testing.assert_array_equal(back.predict(w, n, rd), law.predict(w, n, rd))
    with pytest.raises(CodemixError, match="it needs it"):
        fit_data_law(
            w, n, y, rd, STAGE_COLS, (0.8, 0.2), groups=(2, 2), extra=("overfit", "overfit_fall")
        )


def test_forget_term_extrapolates_code_free_cooldowns():
    """Drawn with a code-free cooldown costing more the longer it is: without the term the
    law misses those runs at the next size up by 10 %; with it by about 1 %."""
    w, n, y, rd = _synthetic.staged_ladder(sizes=LADDER, shares=(0.0, 0.3, 0.6), forget=True)
    err, law = _largest_size_errors(
        w, n, y, rd, [("recency", "overfit"), ("recency", "overfit", "forget")]
    )
    # measured: 0.099 and 0.012 (in-sample 0.043 and 0.0004; tau is the loosest parameter)
    assert err[("recency", "overfit")] > 0.05
    assert err[("recency", "overfit", "forget")] < 0.02
    p = law.params
    assert law.name == "joint_data+recency+overfit+forget"
    assert p["forget_nu"] == pytest.approx(_synthetic.FORGET["nu"], abs=0.1)
    assert p["forget_weight"]["text"] < 1e-8  # no run leaves text out: nothing learnt for it
    f = _synthetic.FORGET  # the loss factor a code-free cooldown of 1e8 tokens costs
    fitted = p["forget_weight"]["code"] * (1e8 / law.token_scale) ** p["forget_nu"]
    assert fitted == pytest.approx(f["F"], rel=0.1)
    # at a target, a code-free cooldown is forgotten over the target's cooldown (2e8 tokens)
    free = np.flatnonzero((w[:, 3] == 0) & (w[:, 1] > 0))[:1]
    theta = law.theta.copy()
    theta[law._layout().i_f + 1] = -50.0  # code's forgetting off
    plain = dataclasses.replace(law, theta=theta)
    at = dict(n_params=1e8, data=TargetData(tokens=1e9))
    ratio = law.predict(w[free], **at) / plain.predict(w[free], **at)
    factor = np.exp(p["forget_weight"]["code"] * (2e8 / law.token_scale) ** p["forget_nu"])
    np.testing.assert_allclose(ratio, factor, rtol=1e-9)
    assert factor > 1.3
    back = DataLawFit.from_dict(json.loads(json.dumps(law.to_dict())))
    np.testing.assert_array_equal(back.predict(w, 1e8), law.predict(w, 1e8))


def _two_arms(**kw):
    """The staged ladder twice: on the synthetic corpus, and on one with 4x the unique text,
    so that at one size the text is read at two rates (as on codemix's full and capped
    stores)."""
    arms = [_synthetic.staged_ladder(**kw), _synthetic.staged_ladder(unique=(4e7, 3e7), **kw)]
    w, n, y = (np.concatenate([a[i] for a in arms]) for i in range(3))
    rds = [a[3] for a in arms]
    cat = [np.concatenate([getattr(r, f) for r in rds]) for f in ("tokens", "epochs")]
    st = [np.concatenate([getattr(r, f) for r in rds]) for f in ("stage_tokens", "after")]
    return w, n, y, RunData(rds[0].domains, *cat, *st)


def test_revert_term_extrapolates_a_forgetting_that_saturates():
    """Drawn with a code-free cooldown that takes the code loss part of the way to that of a
    model that never saw code, whose code loss rises with how often it read its text:
    +forget, whose factor grows without bound in the cooldown's tokens, misses those runs at
    the next size up by several %; +revert by under 1 %."""
    w, n, y, rd = _two_arms(sizes=LADDER, shares=(0.0, 0.3, 0.6), revert=True)
    fit, test = _split(n)
    free = test & (w[:, 3] == 0) & (w[:, 1] > 0)
    err = {}
    for extra in [("recency", "overfit", "forget"), ("recency", "overfit", "revert")]:
        law = fit_data_law(
            *(w[fit], n[fit], y[fit], rd.take(fit), STAGE_COLS, (0.8, 0.2)),
            groups=(2, 2),
            extra=extra,
            overfit_past="power",  # as drawn (see _largest_size_errors)
        )
        err[extra] = np.abs(law.predict(w[test], n[test], rd.take(test)) / y[test] - 1)
    # measured: code-free cooldowns 8.2 % and 0.48 % at most; every run 19.7 % and 3.2 % (the
    # text read 15 times, which R* and the overfitting term share between them)
    assert err[("recency", "overfit", "forget")][free[test]].max() > 0.03
    assert err[("recency", "overfit", "revert")][free[test]].max() < 0.01
    assert err[("recency", "overfit", "revert")].max() < 0.05
    p = law.params
    assert law.name == "joint_data+recency+overfit+revert"
    assert 0.8 < p["revert_share"]["code"] <= 1.0  # 1 drawn; traded off against tau's slope
    r = _synthetic.REVERT
    never = r["H"] * (n / r["n0"]) ** r["h"] * np.exp(r["e"] * np.maximum(rd.epochs[:, 0] - 1, 0))
    assert p["never_seen_slope"]["code"] == pytest.approx(r["h"], abs=0.01)
    assert p["never_seen_epoch_slope"]["code"] == pytest.approx(r["e"], abs=0.002)
    # the text-only run at the next size up, read more often than any fitted run
    none = np.flatnonzero(test & (w[:, 1] == 0) & (w[:, 3] == 0))
    assert rd.epochs[none, 0].max() > rd.take(fit).epochs[:, 0].max()
    assert law.predict(w[none], n[none], rd.take(none)) == pytest.approx(never[none], rel=0.01)
    # however long the cooldown, the code loss stays below that of a model that never saw code
    one = np.flatnonzero(free)[:1]
    long = TargetData(tokens=1e12, unique={"text": 1e12, "code": 1e12})  # no repetition
    far = law.predict(w[one], n[one], long)
    assert far <= law.predict(w[none[:1]], n[none[:1]], long) * (1 + 1e-9)
    back = DataLawFit.from_dict(json.loads(json.dumps(law.to_dict())))
    np.testing.assert_array_equal(back.predict(w, 1e8), law.predict(w, 1e8))
    # a FIT.json written before the epochs term reads with that term at 0
    old = law.to_dict()
    cut = law._layout().i_r + 3 * law._layout().k + 3
    old["theta"], old["boot"] = old["theta"][:cut], [b[:cut] for b in old["boot"]]
    del old["params"]["never_seen_epoch_slope"]
    back = DataLawFit.from_dict(json.loads(json.dumps(old)))
    assert back.params["never_seen_epoch_slope"] == {"text": 0.0, "code": 0.0}
    np.testing.assert_array_equal(back.theta[:cut], law.theta[:cut])


def test_a_forgetting_law_does_not_turn_on_the_order_of_the_rows():
    """The same noisy runs in two orders: one fit, to the optimiser's tolerance, and one
    prediction at the next size up. On codemix's ladder an unfinished first stage of the
    nested fit once sent two orders into basins whose held-out errors differed twofold."""
    w, n, y, rd = _two_arms(sizes=LADDER, shares=(0.0, 0.3, 0.6), revert=True, noise=0.01)
    fit, test = _split(n)
    rows = np.flatnonzero(fit)
    fits = []
    for idx in (rows, np.random.default_rng(1).permutation(rows)):
        fits.append(
            fit_data_law(
                w[idx],
                n[idx],
                y[idx],
                rd.take(idx),
                STAGE_COLS,
                (0.8, 0.2),
                groups=(2, 2),
                extra=("overfit", "revert"),
            )
        )
    one, two = fits
    p1, p2 = (f.predict(w[test], n[test], rd.take(test)) for f in fits)
    # measured: 0.21 % apart at most (the law itself 8.8 % off); 0.83 % before the first
    # stage was polished
    assert two.objective == pytest.approx(one.objective, rel=1e-2)
    np.testing.assert_allclose(p2, p1, rtol=5e-3)


def test_intervals_span_the_tied_laws_predictions_and_keep_them_in_fit_json(noisy_law, tmp_path):
    """A tied law that predicts higher one size up pulls the upper bound with it, by the
    chosen law's own band around its prediction; saved and loaded, the tie is kept."""
    w, n, y, rd = _synthetic.ladder(noise=0.01, seed=0)
    joint = fit_joint_law(w, n, y, COLS, ScalingConfig(n_boot=0))
    high = dataclasses.replace(noisy_law, theta=noisy_law.theta.copy())
    high.theta[0] += 1.0  # a larger irreducible term: higher everywhere (by 5-8 % here)
    at = (w[:3], 3.2e7, TargetData())
    mean, lo, hi = noisy_law.interval(*at[:2], data=at[2])
    law = dataclasses.replace(noisy_law, tied=(high, joint))
    mean2, lo2, hi2 = law.interval(*at[:2], data=at[2])
    np.testing.assert_array_equal(mean2, mean)
    up = high.predict(*at)
    assert np.all(up > hi)  # outside the chosen law's band before
    both = np.maximum(up, joint.predict(w[:3], 3.2e7))
    np.testing.assert_allclose(hi2, np.maximum(hi, both * hi / mean))
    assert np.all(lo2 <= lo)
    save_fit(FitFile(COLS, {}, scaling={"bpb": law}), tmp_path / "F.json")
    again = load_fit(tmp_path / "F.json").scaling["bpb"]
    assert [getattr(t, "name", "joint") for t in again.tied] == ["joint_data", "joint"]
    np.testing.assert_array_equal(np.array(again.interval(*at[:2], data=at[2])), [mean2, lo2, hi2])
    # a joint law chosen over a tied data law spans it the same way
    j = dataclasses.replace(joint, boot=np.tile(joint.theta, (5, 1)), tied=(high,))
    _, jlo, jhi = j.interval(w[:3], 3.2e7, data=TargetData())
    assert np.all(jhi >= high.predict(*at) * (1 - 1e-12))


def test_the_median_of_a_tie_is_the_point_inside_the_same_interval(noisy_law, tmp_path):
    """With tie_point "median" the point is the median of the three laws' predictions, the
    interval is the winner's spanning the tie as before, and both survive FIT.json; a file
    naming another point is refused; `optimum` searches the median and its draws move with it."""
    w, n, y, rd = _synthetic.ladder(noise=0.01, seed=0)
    joint = fit_joint_law(w, n, y, COLS, ScalingConfig(n_boot=0))
    high = dataclasses.replace(noisy_law, theta=noisy_law.theta.copy())
    high.theta[0] += 1.0
    at = (w[:3], 3.2e7, TargetData())
    law = dataclasses.replace(noisy_law, tied=(high, joint))
    mean, lo, hi = law.interval(*at[:2], data=at[2])
    med = dataclasses.replace(law, tie_point="median")
    point, lo2, hi2 = med.interval(*at[:2], data=at[2])
    three = [noisy_law.predict(*at), high.predict(*at), joint.predict(w[:3], 3.2e7)]
    np.testing.assert_allclose(point, np.median(three, axis=0))
    assert not np.allclose(point, mean)
    np.testing.assert_array_equal([lo2, hi2], [lo, hi])
    assert np.all((lo2 <= point) & (point <= hi2))
    save_fit(FitFile(COLS, {}, scaling={"bpb": med}), tmp_path / "F.json")
    assert load_fit(tmp_path / "F.json").scaling["bpb"].tie_point == "median"
    d = json.loads((tmp_path / "F.json").read_text())
    d["scaling"]["bpb"]["tie_point"] = "mean"
    (tmp_path / "F.json").write_text(json.dumps(d))
    with pytest.raises(CodemixError, match="tie_point 'mean' is not one of winner, median"):
        load_fit(tmp_path / "F.json")
    j = dataclasses.replace(joint, boot=np.tile(joint.theta, (5, 1)), tied=(high,))
    jmed = dataclasses.replace(j, tie_point="median")
    p, _, _ = jmed.interval(w[:3], 3.2e7, data=TargetData())
    np.testing.assert_allclose(p, np.sqrt(j.predict(w[:3], 3.2e7) * high.predict(*at)))
    fit = FitFile(COLS, {}, scaling={"bpb": med})
    draws = _optimum_draws(fit, w[:3], 3.2e7, ["bpb"], 5, 0, TargetData())["bpb"]
    own = noisy_law.boot_predictions(*at)[:, :5]
    np.testing.assert_allclose(draws, own * (point / noisy_law.predict(*at))[:, None])


def test_overfit_linear_recovers_a_loss_rising_past_an_onset():
    """A ladder whose log loss rises by 0.02 a text epoch past 10 (9 extra): the linear form
    recovers that and predicts runs that read the text 1.5x more than the ladder, where the
    power fitted to the same onset overshoots."""
    w, n, y, rd = _synthetic.ladder(sizes=LADDER[:4], noise=0.01, overfit=0.02)
    w2, n2, y2, rd2 = _synthetic.ladder(sizes=LADDER[:4], unique=(2e6, 3e7), overfit=0.02)
    beyond = rd2.epochs[:, 0] > rd.epochs[:, 0].max()
    assert beyond.sum() == 3
    err, obj = {}, {}
    for term in ("overfit", "overfit_linear"):
        law = fit_data_law(w, n, y, rd, COLS, (1.0,), extra=(term,))
        err[term] = np.mean(np.abs(law.predict(w2, n2, rd2) / y2 - 1)[beyond])
        obj[term] = law.objective
    p = law.params
    assert p["overfit_slope"] == pytest.approx(0.02, rel=0.15)
    assert p["overfit_onset"] == pytest.approx(9.0, abs=1.0)
    # measured 0.0061 against 0.083 (seeds 1-2: 0.043 against 0.027, 0.015 against 0.053)
    assert obj["overfit_linear"] < obj["overfit"]
    assert err["overfit_linear"] < 0.02 < err["overfit"]
    assert DataLawFit.from_dict(json.loads(json.dumps(law.to_dict()))).params == p
    with pytest.raises(CodemixError, match="two forms of one term"):
        fit_data_law(w, n, y, rd, COLS, (1.0,), extra=("overfit", "overfit_linear"))


def test_overfit_power_goes_on_along_its_tangent_past_the_ladder():
    """Within the ladder's epochs the tangent changes nothing; past them it rises linearly
    from the power's value and slope at the edge, and on a ladder whose log loss rises
    linearly past an onset it predicts the runs beyond better than the power does."""
    w, n, y, rd = _synthetic.ladder(sizes=LADDER[:4], noise=0.01, overfit=0.02)
    w2, n2, y2, rd2 = _synthetic.ladder(sizes=LADDER[:4], unique=(2e6, 3e7), overfit=0.02)
    law = fit_data_law(w, n, y, rd, COLS, (1.0,), extra=("overfit",), n_boot=20)
    assert law.overfit_past == "tangent"
    power = dataclasses.replace(law, overfit_past="power")
    np.testing.assert_array_equal(law.predict(w, n, rd), power.predict(w, n, rd))
    beyond = rd2.epochs[:, 0] > law.ladder_epochs["text"]
    t, p = law.predict(w2, n2, rd2), power.predict(w2, n2, rd2)
    np.testing.assert_array_equal(t[~beyond], p[~beyond])
    assert np.all(t[beyond] < p[beyond])
    err_t, err_p = (np.mean(np.abs(v / y2 - 1)[beyond]) for v in (t, p))
    # the ladder cannot tell the two apart: past it the interval is the union of theirs
    (m, lo, hi), (m_p, lo_p, hi_p) = (x.interval(w2, n2, data=rd2) for x in (law, power))
    np.testing.assert_array_equal(m, t)
    np.testing.assert_array_equal(np.c_[lo, hi], np.c_[lo_p, hi_p])  # one union, either point
    alone = np.array(law._band(w2, n2, law.level, rd2))
    np.testing.assert_array_equal(np.c_[lo, hi][~beyond], alone.T[~beyond])
    assert np.all(hi[beyond] >= np.maximum(alone[1], p)[beyond])
    assert np.all(hi[beyond] > alone[1][beyond])
    assert err_t < err_p  # measured 0.047 against 0.082 (seeds 1-2: 0.016 / 0.043, 0.027 / 0.061)
    # the term itself: continuous at the edge, linear past it
    lay, most = law._layout(), law.ladder_epochs["text"]
    o, kappa = law.theta[lay.i_o], law.theta[lay.i_o + 1]
    epochs = np.c_[most + np.array([-1.0, 0.0, 5.0, 10.0]), np.zeros(4)]
    share, past = np.array([[1.0, 0.0]] * 4), np.array([most, np.inf])
    term = np.exp(_tangent(o, kappa, epochs[:, 0] - 1.0, share, epochs, past))
    np.testing.assert_allclose(term[:2], np.exp(o) * (epochs[:2, 0] - 1.0) ** kappa, rtol=1e-5)
    np.testing.assert_allclose(term[3] - term[2], term[2] - term[1], rtol=1e-6)
    slope = kappa * np.exp(o) * (most - 1.0) ** (kappa - 1)
    np.testing.assert_allclose((term[2] - term[1]) / 5.0, slope, rtol=1e-5)
    # a fit never reads past its own ladder: the tangent has no gradient to give
    xe, xa = law._design(w)
    with pytest.raises(ValueError, match="past its own ladder"):
        _terms(law.theta, lay, xe, xa, np.log(n), rd, grad=True)
    # FIT.json keeps the choice; files from before it read as the power they were
    d = json.loads(json.dumps(law.to_dict()))
    assert DataLawFit.from_dict(d).overfit_past == "tangent"
    del d["overfit_past"]
    assert DataLawFit.from_dict(d).overfit_past == "power"
    with pytest.raises(CodemixError, match="overfit_past 'cubic'"):
        DataLawFit.from_dict(d | {"overfit_past": "cubic"})
    with pytest.raises(CodemixError, match="--overfit-past 'cubic' is not one of tangent, power"):
        choose_size_law(w, n, y, rd, COLS, (1.0,), law="joint_data", overfit_past="cubic")
    with pytest.raises(CodemixError, match="--overfit-past 'cubic' is not one of tangent, power"):
        fit_data_law(w, n, y, rd, COLS, (1.0,), extra=("overfit",), overfit_past="cubic")


def test_restarts_keep_the_lowest_optimum(monkeypatch):
    """The final fit is made again from starts moved by a millionth; the lowest optimum is
    kept, whichever path found it."""
    import scipy.optimize

    from codemix.analysis import contest, datalaw

    w, n, y, rd = _synthetic.ladder(sizes=LADDER, noise=0.01)
    real, seen, found = datalaw._minimise, [], []

    def minimise(starts, *args):
        r = real(starts, *args)
        seen.append(np.array(starts))
        found.append(r.fun * (0.5 if len(seen) == 2 else 1.0))  # restart 1 finds a lower one
        return scipy.optimize.OptimizeResult(x=r.x, fun=found[-1], nit=r.nit)

    monkeypatch.setattr(datalaw, "_minimise", minimise)
    law = fit_data_law(w, n, y, rd, COLS, (1.0,), restarts=2)
    assert len(seen) == 3 and law.objective == found[1] < min(found[0], found[2])
    start = seen[0] != 0
    moved = np.abs(seen[1][start] / seen[0][start] - 1)
    assert 0 < moved.max() < 1e-5  # moved, by about a millionth
    assert not np.array_equal(seen[1], seen[2])  # each restart its own way
    assert contest.RESTARTS >= 1


def test_a_joint_law_widens_where_a_row_reads_beyond_the_ladder():
    """The repetition error of a joint law, its epochs counted by the data law beside it:
    rows within the ladder's epochs keep their interval, rows beyond it widen."""
    from codemix.analysis.scaling import JointLawFit, fit_joint_law

    w, n, y, rd = _synthetic.ladder(sizes=LADDER[:4], unique=(3e6, 1e9), noise=0.01)
    law = fit_data_law(w, n, y, rd, COLS, (1.0,))
    joint = dataclasses.replace(
        fit_joint_law(w, n, y, COLS, ScalingConfig(n_boot=8)), regime=law, repetition_sd=0.05
    )
    plain = dataclasses.replace(joint, repetition_sd=0.0)
    within, beyond = TargetData(tokens=1e6), TargetData(tokens=4e8, unique={"text": 5e6})
    np.testing.assert_allclose(
        joint.interval(w[:1], 4e6, data=within), plain.interval(w[:1], 4e6, data=within)
    )
    _, lo, hi = joint.interval(w[:1], 4e6, data=beyond)
    _, lo0, hi0 = plain.interval(w[:1], 4e6, data=beyond)
    assert lo[0] < lo0[0] and hi[0] > hi0[0]
    back = JointLawFit.from_dict(json.loads(json.dumps(joint.to_dict())))
    assert back.repetition_sd == 0.05
