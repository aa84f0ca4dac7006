"""The report's headline: the answer first. The recommended code share of each stage at the
target with its interval over bootstrap refits, the predicted gain over text only, whether
the optimum sits at the edge of the explored range, the epochs the target implies, and the
fit's warnings (a regime beyond the ladder first of all); then the same answer for the
study's objective and each task family's."""

from __future__ import annotations

import numpy as np

from codemix.analysis.fit import predict
from codemix.analysis.optimum import Objective
from codemix.analysis.report_tasks import FAMILIES
from codemix.analysis.sizes import Size
from codemix.core.errors import CodemixError
from codemix.core.units import format_count

__all__ = ["aims", "answers", "headline", "whose_tokens"]


def whose_tokens(data, law) -> str:
    """Whose token counts a prediction at the target assumed: each domain's unique tokens,
    the target's where given, else the proxies' (those of the data law that counts what the
    runs read: the law itself, or the one a joint law was fitted beside)."""
    from codemix.analysis.regime import assumed_unique, regime_law

    said = []
    if data is not None and data.tokens is not None:
        said.append(f"{format_count(data.tokens)} training tokens")
    given = (data.unique if data is not None else None) or {}
    each = ", ".join(
        f"{d} {format_count(given[d])}" if d in given else f"{d} the proxies' {format_count(v)}"
        for d, v in regime_law(law).unique.items()
    )
    said.append(f"unique tokens {each}")
    if not given:
        said.append("`codemix report --unique-tokens` takes the target's")
    note = assumed_unique(law, data)
    if note:
        said.append(f"note: {note}")
    return "with " + "; ".join(said)


def _epochs(ep: dict) -> str:
    return ", ".join(f"{d} {float(v[0]):.3g}" for d, v in ep.items())


def _code_shares(opt, shares) -> list[tuple[str, float, float, float]]:
    """Each stage's code share at the optimum `opt`, with its argmax interval."""
    out = []
    for st in shares:
        cols = np.asarray(st.cols)[np.asarray(st.code)]
        x = float(opt.mixture[cols].sum())
        a, b = float(opt.argmax_lo[cols].sum()), float(opt.argmax_hi[cols].sum())
        out.append((st.name.rpartition(".")[2], x, a, b))
    return out


def aims(fit, nl: str, study_objective: str | None) -> list[tuple[str, Objective]]:
    """What the headline answers beside the lowest `nl`: the study's objective where it is
    another (and the fit has its metrics), then each task family's where the fit has its
    metric: its accuracy (fitted or linked), else its bits per byte. The families need not
    agree: code helps code and reasoning, and can cost knowledge."""
    from codemix.analysis.optimum import parse_objective

    known = sorted(set(fit.metrics) | set(fit.links))
    out, said = [], {f"min:{nl}"}
    if study_objective and study_objective not in said:
        try:
            out.append(("the study's objective", parse_objective(study_objective, known)))
            said.add(study_objective)
        except CodemixError:
            pass  # the fit lacks one of its metrics: nothing to answer with
    for f in FAMILIES:
        acc, bpb = f"task.{f}.acc", f"task.{f}.bpb"
        m = acc if acc in known else bpb if bpb in known else None
        if m is None:
            continue
        text = f"{'max' if m == acc else 'min'}:{m}"
        if text not in said:
            out.append((f.replace("_", " "), Objective({m: -1.0 if m == acc else 1.0}, text=text)))
            said.add(text)
    return out


def answers(fit, target: Size, shares, objectives, data=None) -> list[str]:
    """For each (name, objective) of `objectives` (from `aims`): the code share of every
    stage at the target, with the spread over bootstrap refits, and the prediction there."""
    from codemix.analysis.optimum import edge_stages, find_optimum

    lines = []
    for name, aim in objectives if shares else []:
        opt = find_optimum(fit, aim, target.count, n_draws=100, data=data)
        each = ", ".join(
            f"{stage} {x:.0%} ({a:.0%}-{b:.0%})" for stage, x, a, b in _code_shares(opt, shares)
        )
        there = ", ".join(
            f"{m} {mean:.4g} (90 % PI {low:.4g}-{high:.4g})"
            for m, (mean, low, high) in opt.predicted.items()
            if m in aim.weights
        )
        edge = edge_stages(fit, opt.mixture)
        lines.append(
            f"For {name} ({aim.text}), code share at {target.short}: {each} (90 % of "
            f"bootstrap refits in brackets); predicted {there}"
            + (f"; at the edge of the explored range for {', '.join(edge)}" if edge else "")
            + "."
        )
    return lines


def headline(fit, target: Size, nl: str, shares, data=None) -> list[str]:
    """The recommended code share of each stage at the target for the lowest `nl`, with the
    argmax interval, the predicted gain over text only, an edge-of-range warning, and the
    fit's warnings about its size law."""
    from codemix.analysis.confirm import _text_only
    from codemix.analysis.decision import rising_warning
    from codemix.analysis.optimum import edge_stages, find_optimum, outside_ranges
    from codemix.analysis.regime import (
        RISE_TOL,
        beyond_ladder,
        mild_note,
        rise_past_ladder,
        target_epochs,
    )
    from codemix.analysis.scaling import exponent_warnings, few_sizes_warning

    lowest = Objective({nl: 1.0}, text=f"min:{nl}")
    opt = find_optimum(fit, lowest, target.count, n_draws=100, data=data)
    lines = [
        f"Recommended code share of stage {stage} at {target.short}: {x:.0%} "
        f"(90 % of bootstrap refits put the optimum between {a:.0%} and {b:.0%})."
        for stage, x, a, b in _code_shares(opt, shares)
    ]
    mean, low, high = opt.predicted[nl]
    lines.append(f"Predicted {nl} there: {mean:.4g} bits per byte (90 % PI {low:.4g}-{high:.4g}).")
    text = _text_only(fit, opt.mixture)
    if text is not None and shares:
        base = predict(fit, text[None, :], target.count, data=data)[nl][0][0]
        # the ladder may never have trained without code: then text only is extrapolated
        out = outside_ranges(fit, text[None, :])
        far = out is not None and len(out.rows) > 0
        lines.append(
            f"Predicted gain over text only (no code in any stage): {base - mean:+.4g} bits "
            f"per byte ({base:.4g} -> {mean:.4g})"
            + (", text only lying outside the fitted runs' shares (extrapolated)." if far else ".")
        )
    edge = edge_stages(fit, opt.mixture)
    if edge:
        lines.append(
            f"The optimum lies at the edge of the explored range for {', '.join(edge)}: "
            "explore further (widen that stage's search range) before trusting it."
        )
    law = fit.scaling.get(nl)
    if law is not None:
        for why in exponent_warnings(law):
            lines.append(f"Warning from the fit: {why}.")
        rising = rising_warning(nl, fit.decision.get(nl, []))
        if rising:
            lines.append(f"Warning from the fit: {rising}.")
        few = few_sizes_warning(law)
        if few:
            lines.append(f"Warning: {few}.")
        ep = target_epochs(law, opt.mixture[None, :], target.count, data)
        if ep is not None:
            whose = whose_tokens(data, law)
            lines.append(
                f"Epochs at the target (passes over each domain's unique tokens) for the "
                f"optimum: {_epochs(ep)} ({whose})."
            )
        beyond = beyond_ladder(law, opt.mixture[None, :], target.count, data)
        most = max((float(e.max()) for e in (ep or {}).values()), default=0.0)
        if beyond:
            # first on the page: every figure of the answer below extrapolates into it
            lines.insert(
                0,
                "Read this first: the answer below lies beyond the ladder's regimes at the "
                f"target ({whose_tokens(data, law)}): "
                + "; ".join(beyond)
                + ". The law has not seen this; add ladder runs that do (benchmarks/RESULTS.md)."
                + (
                    f" The interval there widens by a log-sd of {law.repetition_sd:.2g} an "
                    "epoch beyond the ladder's most (what the fit missed where its most-read "
                    "runs were held out), which does not cover a law that is wrong in that regime."
                    if getattr(law, "repetition_sd", 0.0)
                    else ""
                )
                + (
                    " Its overfitting term goes on there "
                    + (
                        "along its tangent at the ladder's most epochs; the interval spans that "
                        "and the power it was fitted as."
                        if law.overfit_past == "tangent"
                        else "as the power; the interval spans that and its tangent at the "
                        "ladder's most epochs."
                    )
                    if "overfit" in getattr(law, "extra", ())
                    and any("read up to" in x for x in beyond)
                    else ""
                )
                + (
                    " " + mild_note(most) + "."
                    if mild_note(most) and not any("left out" in x for x in beyond)
                    else ""
                ),
            )
        rise = rise_past_ladder(law, opt.mixture[None, :], target.count, data)
        if rise is not None:
            lines.append(
                f"Warning: the law forecasts the optimum's {nl} {rise[2]:+.0%} above the same "
                f"schedule at the ladder's largest size (more than {RISE_TOL:.0%}): a rise "
                "carried on from the ladder's top rungs; rank by it, and confirm the level."
            )
        if target.count > 4 * max(law.sizes):
            lines.append(
                f"The target is {target.count / max(law.sizes):.0f}x the largest proxy: the "
                "prediction extrapolates far, and its interval says how far it can be trusted."
            )
    return lines
