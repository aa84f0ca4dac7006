"""The report's headline: whose token counts its answer assumes at the target."""

from __future__ import annotations

import numpy as np


def test_the_headline_says_when_it_assumes_a_matched_ladders_median_unique_tokens():
    """A matched ladder's runs read a share of the store each: the headline's tokens line
    names the median it took for the target's corpus, and drops the note once given one."""
    from codemix.analysis import _synthetic
    from codemix.analysis.datalaw import RunData, TargetData, fit_data_law
    from codemix.analysis.headline import whose_tokens

    w, n, y, rd = _synthetic.ladder()
    unique = np.c_[0.05 * rd.tokens.sum(1), np.full(len(n), 3e7)]
    matched = RunData(rd.domains, rd.tokens, rd.tokens / unique)
    law = fit_data_law(w, n, y, matched, rd.domains, (1.0,), n_boot=0)
    said = whose_tokens(None, law)
    assert "text the proxies' 1.5M" in said and "note: the target is assumed" in said
    given = whose_tokens(TargetData(unique={"text": 1e9, "code": 1e9}), law)
    assert given == "with unique tokens text 1B, code 1B"


def test_the_headline_reads_a_joint_laws_tokens_from_the_data_law_beside_it():
    """A joint law counts no tokens itself: the headline's tokens line is the data law's
    that `fit` kept beside it (`regime`)."""
    import dataclasses

    from codemix.analysis import _synthetic
    from codemix.analysis.datalaw import fit_data_law
    from codemix.analysis.headline import whose_tokens
    from codemix.analysis.scaling import ScalingConfig, fit_joint_law

    w, n, y, rd = _synthetic.ladder()
    law = fit_data_law(w, n, y, rd, rd.domains, (1.0,), n_boot=0)
    joint = dataclasses.replace(
        fit_joint_law(w, n, y, rd.domains, ScalingConfig(n_boot=0)), regime=law
    )
    assert whose_tokens(None, joint) == whose_tokens(None, law)
    assert "the proxies'" in whose_tokens(None, joint)
