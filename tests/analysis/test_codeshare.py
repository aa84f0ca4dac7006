"""Code shares come from the code domains a study named, never from a column's suffix."""

from __future__ import annotations

import numpy as np
import pytest

from codemix.analysis.codeshare import (
    check_code_domains,
    domain_of,
    observed_share_columns,
    set_shares,
    share_range,
    stage_shares,
)
from codemix.analysis.fitfile import FitFile
from codemix.core.errors import CodemixError

COLS = (
    "mix.init.text",
    "mix.init.web_code",
    "mix.init.hq_code",
    "mix.cooldown.text",
    "mix.cooldown.hq_code",
    "tpp",  # a free stage variable
)


def _fit(code_domains) -> FitFile:
    return FitFile(COLS, {}, groups=(3, 2, 1), code_domains=code_domains)


def test_every_code_domain_of_a_stage_counts():
    shares = stage_shares(_fit(("web_code", "hq_code")))
    assert [s.name for s in shares] == ["code_frac.init", "code_frac.cooldown"]
    assert shares[0].cols == (0, 1, 2) and shares[0].code == (False, True, True)
    assert shares[1].cols == (3, 4) and shares[1].code == (False, True)
    # only the named domains: with hq_code alone, web_code is not code
    assert stage_shares(_fit(("hq_code",)))[0].code == (False, False, True)
    assert stage_shares(_fit(None)) == []  # nothing named: no guess


def test_a_stage_without_code_or_all_code_has_no_share():
    fit = FitFile(("a.text", "a.code", "b.code", "b.hq"), {}, groups=(2, 2))
    fit.code_domains = ("code", "hq")
    shares = stage_shares(fit)
    assert len(shares) == 1 and shares[0].name == "code share of a.text, a.code"


def test_set_shares_keeps_proportions_within_code_and_the_rest():
    s = stage_shares(_fit(("web_code", "hq_code")))[0]
    base = np.array([0.5, 0.1, 0.4, 0.8, 0.2, 30.0])
    w = set_shares(base, {s: np.array([0.0, 0.25, 1.0])})
    np.testing.assert_allclose(w[:, :3].sum(1), 1.0)
    np.testing.assert_allclose(w[:, 1:3].sum(1), [0.0, 0.25, 1.0])
    np.testing.assert_allclose(w[1, 1:3], [0.05, 0.2])  # web:hq stays 1:4
    np.testing.assert_allclose(w[:, 3:], np.tile(base[3:], (3, 1)))  # other stages untouched


def test_share_range_stays_within_the_runs_weights():
    s = stage_shares(_fit(("web_code", "hq_code")))[0]
    base = np.array([0.5, 0.1, 0.4, 0.8, 0.2, 30.0])
    lo = np.array([0.2, 0.0, 0.0, 0.5, 0.0, 10.0])
    hi = np.array([0.9, 0.3, 0.6, 1.0, 0.5, 40.0])
    bottom, top = share_range(s, base, lo, hi)
    assert bottom == pytest.approx(0.1)  # text <= 0.9
    assert top == pytest.approx(0.75)  # hq_code = 0.8 x <= 0.6 (text >= 0.2 allows 0.8)
    w = set_shares(base, {s: np.array([bottom, top])})
    assert np.all(w >= lo - 1e-12) and np.all(w <= hi + 1e-12)


def test_observed_share_columns_are_named_never_guessed():
    cols = [
        "mix.init.code",
        "mix.init.hq_code",
        "code_frac.init",
        "code_frac.init_late",
        "param.stages.init.code_frac",
        "choice.stages.init.code_frac",
        "param.train.lr_peak",
    ]
    assert observed_share_columns(cols) == ["param.stages.init.code_frac"]
    assert observed_share_columns(cols, lambda c: not c.startswith("param")) == [
        "code_frac.init",
        "code_frac.init_late",
    ]
    assert observed_share_columns(["mix.init.code", "bpb.code"]) == []


def test_code_domains_must_name_a_mixture_domain():
    assert domain_of("mix.init.hq_code") == "hq_code" and domain_of("code") == "code"
    assert check_code_domains(["hq_code"], COLS) == ("hq_code",)
    with pytest.raises(CodemixError, match="hq-code match no mixture column"):
        check_code_domains(["hq-code"], COLS)
