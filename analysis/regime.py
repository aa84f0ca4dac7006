"""The target against the ladder: the unique tokens a target has per domain, the epochs each
mixture implies there, and what a target reads that no ladder run did (more epochs, longer
absences, a loss forecast to rise past the ladder's sizes), which the commands warn of."""

from __future__ import annotations

import numpy as np

from codemix.analysis._lawterms import _absent
from codemix.analysis.datalaw import DataLawFit, RunData, TargetData
from codemix.core.errors import CodemixError

__all__ = [
    "MILD_EPOCHS",
    "RISE_TOL",
    "assumed_unique",
    "beyond_ladder",
    "check_target",
    "matched_shares",
    "mild_note",
    "parse_unique_tokens",
    "regime_law",
    "rise_past_ladder",
    "target_epochs",
]


def parse_unique_tokens(text: str | None, what: str = "--unique-tokens") -> dict[str, float] | None:
    """'text=500B,code=140B', or a token store's folder (its manifest's training tokens per
    domain: of the whole sources where the store keeps a sample of them), as {domain:
    unique tokens}."""
    import json
    from pathlib import Path

    from codemix.core.units import parse_count

    if not text:
        return None
    path = Path(text)
    if "=" not in text:
        manifest = path / "manifest.json"
        if not manifest.is_file():
            raise CodemixError(
                f"{what} {text}: neither DOMAIN=TOKENS,... nor a token store (no {manifest})"
            )
        domains = json.loads(manifest.read_text()).get("domains") or {}
        return {
            d: float(v.get("available_train_tokens", v["train_tokens"])) for d, v in domains.items()
        }
    out = {}
    for part in text.split(","):
        name, eq, value = part.partition("=")
        if not eq or not name.strip():
            raise CodemixError(f"{what}: {part!r} is not DOMAIN=TOKENS (e.g. text=500B)")
        if name.strip() in out:
            raise CodemixError(f"{what}: domain {name.strip()!r} is given twice")
        out[name.strip()] = parse_count(value.strip(), f"{what} {name.strip()}")
        if out[name.strip()] <= 0:
            raise CodemixError(f"{what} {name.strip()}: must be more than 0")
    return out


def check_target(law, data: TargetData | None, what: str = "--unique-tokens") -> None:
    """A clear error for target data a data-constrained law cannot use."""
    if not isinstance(law, DataLawFit) or data is None or not data.unique:
        return
    unknown = sorted(set(data.unique) - set(law.domains))
    if unknown:
        raise CodemixError(
            f"{what}: domain {unknown[0]!r} is not one the fit knows ({', '.join(law.domains)})"
        )


# up to this many epochs repetition costs little (Muennighoff et al. 2023): where rows read
# a domain past the ladder's most but no further, the warnings say it is a small step
MILD_EPOCHS = 4.0


def mild_note(most: float) -> str:
    """The sentence the regime warnings end with where no row reads any domain more than
    `MILD_EPOCHS` times ('' otherwise)."""
    if not 0 < most <= MILD_EPOCHS:
        return ""
    return (
        f"No domain is read more than {most:.3g} times here, though: up to about "
        f"{MILD_EPOCHS:g} epochs repeated tokens are worth nearly as much as new ones "
        "(Muennighoff et al. 2023), so this is a small step past the ladder"
    )


def beyond_ladder(law, w, n, data: TargetData | None, tol: float = 0.05) -> list[str]:
    """What the rows (mixtures `w` at sizes `n` under `data`) do that no fitted run did, by
    more than `tol`: read a domain more times, or leave it out for more tokens after its last
    stage. A law extrapolates there in a regime it has not seen (codemix's validation ladders
    missed such runs one size up by 7-47 %; benchmarks/RESULTS.md)."""
    law = regime_law(law)
    if law is None or not law.ladder_epochs:
        return []
    rd = law.run_data(np.atleast_2d(w), n, data)
    rows = len(rd.epochs)

    def which(over) -> str:
        return f"{over.sum()} of {rows} rows; " if rows > 1 else ""

    out = []
    for k, d in enumerate(law.domains):
        top = law.ladder_epochs[d]
        over = rd.epochs[:, k] > top * (1 + tol)
        if over.any():
            out.append(
                f"{d} read up to {rd.epochs[:, k].max():.3g} times ({which(over)}the ladder "
                f"at most {top:.3g})"
            )
    if rd.stage_tokens is not None and law.ladder_absence:
        a = _absent(rd, 1.0)
        for k, d in enumerate(law.domains):
            top = law.ladder_absence[d]
            over = a[:, k] > top * (1 + tol)
            if over.any():
                seen = f"the ladder at most {top:.3g}" if top else "no ladder run left it out"
                out.append(
                    f"{d} left out for up to {a[:, k].max():.3g} tokens after its last stage "
                    f"({which(over)}{seen})"
                )
    return out


# a forecast this far above the same schedule's at the ladder's largest size is named: the
# grid ladder without its stage-length arm forecast code-free cooldowns one size up at up to
# 136 % above the same schedules at its top, 1.7-3.3 times what the runs scored
# (benchmarks/RESULTS.md, twenty-fourth session); the largest rise a codemix ladder showed
# between two of its sizes was about +50 %
RISE_TOL = 0.2


def rise_past_ladder(law, w, n, data: TargetData | RunData | None, tol: float = RISE_TOL):
    """Where a data law forecasts a row beyond the ladder's sizes more than `tol` above what
    it forecasts for the same schedule at the ladder's largest size (the same tokens per
    parameter and corpus, so epochs and stage tokens scaled with N): (rows rising, rows
    beyond the ladder, the largest rise). None where no row rises so; a joint law's loss
    falls with N and never does."""
    if not isinstance(law, DataLawFit) or not law.sizes:
        return None
    w = np.atleast_2d(w)
    n = np.broadcast_to(np.asarray(n, float), (len(w),))
    top = max(law.sizes)
    past = n > top * 1.01
    if not past.any():
        return None
    rd = data if isinstance(data, RunData) else law.run_data(w, n, data)
    rd, w, n = rd.take(past), w[past], n[past]
    r = top / n
    staged = rd.stage_tokens is not None
    there = RunData(
        rd.domains,
        rd.tokens * r[:, None],
        rd.epochs * r[:, None],
        rd.stage_tokens * r[:, None, None] if staged else None,
        rd.after * r[:, None] if staged else None,
    )
    rise = law.predict(w, n, rd) / law.predict(w, np.full(len(w), top), there) - 1.0
    up = rise > tol
    return (int(up.sum()), len(w), float(rise.max())) if up.any() else None


def target_epochs(law, w, n, data: TargetData | None) -> dict[str, np.ndarray] | None:
    """Epochs per domain each mixture implies at the target, for a data-constrained law (or
    a joint law fitted beside one)."""
    law = regime_law(law)
    if law is None:
        return None
    rd = law.run_data(np.atleast_2d(w), n, data)
    return {d: rd.epochs[:, k] for k, d in enumerate(rd.domains)}


def matched_shares(law, w, n, data: TargetData | None) -> dict[str, float]:
    """`[train] unique_share` per domain for a repetition-matched ladder: the share of a
    run's tokens that the rows' largest run reads as unique tokens of each repeated domain.
    A ladder run capped so reads each domain as often, mixture for mixture, as that run."""
    law = regime_law(law)
    if law is None:
        return {}
    rd = law.run_data(np.atleast_2d(w), n, data)
    i = int(np.argmax(rd.tokens.sum(1)))
    total, tokens, epochs = rd.tokens[i].sum(), rd.tokens[i], rd.epochs[i]
    return {
        d: float(tokens[k] / epochs[k] / total)
        for k, d in enumerate(rd.domains)
        if epochs[k] > 1.0  # a domain read once or less needs no cap
    }


def assumed_unique(law, data: TargetData | None) -> str:
    """Where the ladder's runs read a domain's unique tokens in amounts far apart (a capped
    arm, a repetition-matched ladder) and the target is given none of its own: what the
    prediction assumes (the runs' median), so that it is not taken for the target's corpus.
    '' where nothing is assumed so."""
    from codemix.core.units import format_count

    law = regime_law(law)
    if law is None or (data is not None and data.epochs is not None):
        return ""
    given = (data.unique if data is not None else None) or {}
    wide = {d: r for d, r in law.unique_range.items() if d not in given and r[1] > 1.1 * r[0]}
    if not wide:
        return ""
    each = ", ".join(
        f"{d} {format_count(law.unique[d])} (the runs read {format_count(lo)}-{format_count(hi)})"
        for d, (lo, hi) in wide.items()
    )
    return (
        f"the target is assumed to have the ladder runs' median unique tokens: {each}; its "
        "runs were capped or repetition-matched, so give the target's own corpus "
        "(--unique-tokens STORE or DOMAIN=TOKENS,...)"
    )


def regime_law(law) -> DataLawFit | None:
    """The data-constrained law that knows what runs read: the law itself, or the one a
    joint law was fitted beside (`JointLawFit.regime`)."""
    if isinstance(law, DataLawFit):
        return law
    regime = getattr(law, "regime", None)
    return regime if isinstance(regime, DataLawFit) else None
