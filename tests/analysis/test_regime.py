"""The target against the ladder: unique tokens given or assumed, the epochs a target implies,
matched shares, and the warnings for what no ladder run did."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from codemix.analysis import _synthetic
from codemix.analysis.datalaw import DataLawFit, RunData, TargetData, fit_data_law
from codemix.analysis.regime import assumed_unique, parse_unique_tokens
from codemix.analysis.scaling import ScalingConfig, fit_joint_law
from codemix.core.errors import CodemixError

COLS = ("text", "code")
LADDER = (1e6, 2e6, 4e6, 8e6, 1.6e7)
STAGE_COLS = ("mix.init.text", "mix.init.code", "mix.cooldown.text", "mix.cooldown.code")


def test_a_matched_ladder_says_that_its_median_unique_tokens_are_assumed():
    """Runs that each read a share of their own tokens as unique text (a repetition-matched
    ladder) read 10x more unique text at the largest size than at the smallest: a prediction
    that takes their median for the target's corpus says so, until the target's is given."""
    w, n, y, rd = _synthetic.ladder()
    total = rd.tokens.sum(1)
    unique = np.c_[0.05 * total, np.full(len(n), 3e7)]
    matched = RunData(rd.domains, rd.tokens, rd.tokens / unique)
    law = fit_data_law(w, n, y, matched, COLS, (1.0,), n_boot=0)
    lo, hi = law.unique_range["text"]
    assert (lo, hi) == pytest.approx((0.05 * total.min(), 0.05 * total.max()))
    assert law.unique_range["code"] == pytest.approx((3e7, 3e7))
    note = assumed_unique(law, None)
    assert "text 1.5M (the runs read 500K-4M)" in note and "code" not in note
    assert "--unique-tokens STORE" in note
    assert assumed_unique(law, TargetData(unique={"text": 1e8})) == ""
    assert assumed_unique(DataLawFit.from_dict(law.to_dict()), None) == note
    plain = fit_data_law(w, n, y, rd, COLS, (1.0,), n_boot=0)
    assert assumed_unique(plain, None) == ""


def test_parse_unique_tokens_counts_and_token_stores(tmp_path):
    assert parse_unique_tokens("text=500B,code=140B") == {"text": 5e11, "code": 1.4e11}
    assert all(type(v) is float for v in parse_unique_tokens("text=500B, code=3e6").values())
    assert parse_unique_tokens(None) is None and parse_unique_tokens("") is None
    manifest = {"domains": {"text": {"train_tokens": 100}, "code": {"train_tokens": 40}}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert parse_unique_tokens(str(tmp_path)) == {"text": 100.0, "code": 40.0}
    # a store keeping a sample of its sources: the whole sources' tokens are what a target sees
    manifest["domains"]["text"]["available_train_tokens"] = 1000
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert parse_unique_tokens(str(tmp_path)) == {"text": 1000.0, "code": 40.0}
    with pytest.raises(CodemixError, match="neither DOMAIN=TOKENS.*nor a token store"):
        parse_unique_tokens("text")
    with pytest.raises(CodemixError, match=r"--unique-tokens text: cannot read 'abc'"):
        parse_unique_tokens("text=abc")
    with pytest.raises(CodemixError, match="'code' is not DOMAIN=TOKENS"):
        parse_unique_tokens("text=5B,code")
    with pytest.raises(CodemixError, match="must be more than 0"):
        parse_unique_tokens("text=0")
    with pytest.raises(CodemixError, match="domain 'text' is given twice"):
        parse_unique_tokens("text=5B,code=1B,text=6B")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CodemixError, match=r"nor a token store \(no .*manifest\.json\)"):
        parse_unique_tokens(str(empty))


def _absent_tokens(rd):
    from codemix.analysis._lawterms import _absent

    return _absent(rd, 1.0)[:, 1]


def test_rows_own_stage_lengths_and_regimes_beyond_the_ladder():
    """A row's tokens per stage (a confirmation run with a longer cooldown) set how long it
    leaves a domain out; beyond_ladder names the epochs and absences no fitted run reached."""
    from codemix.analysis.regime import beyond_ladder

    w, n, y, rd = _synthetic.staged_ladder(
        sizes=LADDER[:4], shares=(0.0, 0.3, 0.6), noise=0.01, forget=True
    )
    law = fit_data_law(w, n, y, rd, STAGE_COLS, (0.8, 0.2), groups=(2, 2), extra=("forget",))
    free = np.flatnonzero((w[:, 3] == 0) & (w[:, 1] > 0) & (n == LADDER[3]))[:1]
    tokens = rd.tokens[free].sum()
    assert law.ladder_absence["code"] == pytest.approx(_absent_tokens(rd).max())
    assert law.ladder_absence["text"] == 0.0  # every cooldown has text
    # the proxies' split (0.8 / 0.2) unless the row says otherwise
    same = law.run_data(w[free], n[free], TargetData(tokens, None, rd.epochs[free]))
    np.testing.assert_allclose(same.after[:, 0], 0.2 * tokens)
    longer = TargetData(tokens, None, rd.epochs[free], np.array([[0.6, 0.4]]) * tokens)
    np.testing.assert_allclose(law.run_data(w[free], n[free], longer).after[:, 0], 0.4 * tokens)
    assert law.predict(w[free], n[free], longer) > law.predict(w[free], n[free], same)
    assert beyond_ladder(law, w[free], n[free], TargetData(tokens, None, rd.epochs[free])) == []
    found = beyond_ladder(law, w[free], n[free], longer)
    assert len(found) == 1 and found[0].startswith("code left out for up to")
    many = TargetData(tokens, None, rd.epochs[free] * 3)
    assert [x.split(" read")[0] for x in beyond_ladder(law, w[free], n[free], many)] == [
        "text",
        "code",
    ]
    back = DataLawFit.from_dict(json.loads(json.dumps(law.to_dict())))
    assert (back.ladder_epochs, back.ladder_absence) == (law.ladder_epochs, law.ladder_absence)


def _forgetting_law():
    """A law with the forgetting term, fitted on a staged ladder drawn with it, and the
    ladder's largest size."""
    w, n, y, rd = _synthetic.staged_ladder(
        sizes=LADDER[:4], shares=(0.0, 0.3, 0.6), noise=0.01, forget=True
    )
    law = fit_data_law(w, n, y, rd, STAGE_COLS, (0.8, 0.2), groups=(2, 2), extra=("forget",))
    return w[n == LADDER[3]], law


def test_a_forecast_rising_past_the_ladder_is_named():
    """rise_past_ladder compares a row beyond the ladder with the same schedule at the
    ladder's largest size: code-free cooldowns forgotten much faster than the ladder shows
    rise past the tolerance; the fitted law's own rise (a few %), rows with code in the
    cooldown and rows within the ladder do not."""
    from codemix.analysis.regime import RISE_TOL, rise_past_ladder

    w, law = _forgetting_law()
    free, withc = w[(w[:, 3] == 0) & (w[:, 1] > 0)], w[w[:, 3] > 0]
    up = 2 * LADDER[3]
    # measured: +3.0 % for the code-free cooldowns, -0.3 % with code in the cooldown
    k, rows, most = rise_past_ladder(law, free, up, None, tol=0.0)
    assert (k, rows) == (len(free), len(free)) and 0.0 < most < RISE_TOL
    assert rise_past_ladder(law, free, up, None) is None
    assert rise_past_ladder(law, withc, up, None, tol=0.0) is None
    assert rise_past_ladder(law, free, LADDER[3], None, tol=-1.0) is None  # within the ladder
    i = law._layout().i_f + 1  # code's forgetting weight, in log

    def forgetting(shift: float) -> DataLawFit:
        theta = law.theta.copy()
        theta[i] += shift
        return dataclasses.replace(law, theta=theta)

    assert rise_past_ladder(forgetting(-50.0), free, up, None) is None  # none forgotten
    strong = forgetting(2.0)  # e^2 times the fitted weight
    k, rows, most = rise_past_ladder(strong, free, up, None)
    assert k == rows == len(free) and most > RISE_TOL  # measured: +28 %
    # a row's own tokens and epochs (a confirmation table) scale to the ladder's size alike
    rd = strong.run_data(free, up, None)
    assert rise_past_ladder(strong, free, up, rd)[2] == pytest.approx(most)


def test_matched_shares_read_each_domain_as_often_as_the_target():
    """A ladder run capped at `matched_shares` of its tokens reads each repeated domain as
    often as the target does, mixture for mixture; a joint law answers through the data law
    fitted beside it, and keeps it through FIT.json."""
    from codemix.analysis.regime import beyond_ladder, matched_shares, regime_law, target_epochs
    from codemix.analysis.scaling import JointLawFit

    w, n, y, rd = _synthetic.ladder(sizes=LADDER[:4], unique=(3e6, 1e9), noise=0.01)
    law = fit_data_law(w, n, y, rd, COLS, (1.0,))
    target = TargetData(tokens=4e8, unique={"text": 5e6, "code": 1e9})
    shares = matched_shares(law, [[0.7, 0.3]], 3e7, target)
    assert shares == pytest.approx({"text": 5e6 / 4e8})  # code is read less than once
    small = 1e6 * law.tokens_per_param
    capped = TargetData(tokens=small, unique={"text": shares["text"] * small, "code": 1e9})
    np.testing.assert_allclose(
        target_epochs(law, [[0.7, 0.3]], 1e6, capped)["text"],
        target_epochs(law, [[0.7, 0.3]], 3e7, target)["text"],
    )
    joint = fit_joint_law(w, n, y, COLS, ScalingConfig(n_boot=0))
    assert regime_law(joint) is None and beyond_ladder(joint, w[:1], 3e7, target) == []
    joint = dataclasses.replace(joint, regime=law)
    assert regime_law(joint) is law
    assert beyond_ladder(joint, w[:1], 3e7, target)[0].startswith("text read up to")
    back = JointLawFit.from_dict(json.loads(json.dumps(joint.to_dict())))
    assert back.regime.ladder_epochs == law.ladder_epochs


def test_the_mild_note_only_within_the_few_epochs_repetition_costs_little():
    from codemix.analysis.regime import MILD_EPOCHS, mild_note

    assert mild_note(1.12).startswith("No domain is read more than 1.12 times here, though")
    assert "small step past the ladder" in mild_note(MILD_EPOCHS)
    assert mild_note(MILD_EPOCHS + 0.01) == "" and mild_note(0.0) == ""
