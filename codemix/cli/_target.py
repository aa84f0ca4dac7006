"""What a prediction's target reads against the ladder, for `predict`, `optimum`, `confirm`
and `report`: the target's tokens and unique tokens from the command line, each row's own
tokens, epochs and stage lengths from a table, and the warnings for what no ladder run did.
Nothing numerical loads here; the analysis package is imported when a function runs."""

from __future__ import annotations


def target_data_args(p) -> None:
    p.add_argument(
        "--target-tokens",
        metavar="N",
        help="training tokens of the target run (e.g. 200B; default: the proxies' tokens per "
        "parameter times the target's parameters); for a data-constrained law",
    )
    p.add_argument(
        "--unique-tokens",
        metavar="D=N,...|STORE",
        help="unique tokens per domain available to the target (text=500B,code=140B), or a "
        "token store whose manifest says (default: the proxies' corpus)",
    )


def target_data(args, fit, rows: int | None = None):
    """(TargetData or None, a line saying what it assumes) from --target-tokens and
    --unique-tokens; refused for a fit without a data-constrained law. A joint law fitted
    beside one takes them too: its point prediction ignores them, its interval's repetition
    error and the warnings do not."""
    from codemix.analysis.datalaw import TargetData
    from codemix.analysis.regime import check_target, parse_unique_tokens, regime_law
    from codemix.core.errors import CodemixError
    from codemix.core.units import parse_count

    if not (args.target_tokens or args.unique_tokens):
        return None
    readers = [r for law in fit.scaling.values() if (r := regime_law(law)) is not None]
    if not readers:
        raise CodemixError(
            "--target-tokens and --unique-tokens need a data-constrained size law; this fit "
            "has none (refit with --size-col on a study export, or --law joint_data)"
        )
    tokens = parse_count(args.target_tokens, "--target-tokens") if args.target_tokens else None
    if tokens is not None and tokens <= 0:
        raise CodemixError("--target-tokens must be more than 0")
    data = TargetData(tokens, parse_unique_tokens(args.unique_tokens))
    for law in readers:
        check_target(law, data)
    return data


def epochs_line(fit, w, size, data) -> str:
    """'epochs at the target: text 3.1, code 0.4' for the first data-constrained law."""
    from codemix.analysis.regime import target_epochs

    for law in fit.scaling.values():
        ep = target_epochs(law, w, size, data)
        if ep is not None:
            return "epochs at the target: " + ", ".join(f"{d} {v[0]:.3g}" for d, v in ep.items())
    return ""


def fit_warnings(fit) -> list[str]:
    """'bpb.code: alpha 3 ...' for each size law whose exponents lie out of the plausible
    or that rests on fewer than 4 sizes, and each metric whose loss rose with size on the
    ladder: `predict`, `optimum`, `confirm` and its report say them beside any prediction
    from the size law, which rests on what the fit already doubts."""
    from codemix.analysis.decision import rising_warning
    from codemix.analysis.scaling import exponent_warnings, few_sizes_warning

    out = [f"{m}: {why}" for m, law in fit.scaling.items() for why in exponent_warnings(law)]
    out += [f"{m}: {few}" for m, law in fit.scaling.items() if (few := few_sizes_warning(law))]
    rising = ((m, rising_warning(m, fit.decision.get(m, []))) for m in fit.scaling)
    return out + [f"{m}: {why}" for m, why in rising if why]


def print_assumed(fit, data, indent: str = "") -> None:
    """The unique tokens a prediction took from a capped or matched ladder, once a metric."""
    from codemix.analysis.regime import assumed_unique

    said = set()
    for m, law in fit.scaling.items():
        note = assumed_unique(law, data)
        if note and note not in said:
            said.add(note)
            print(f"{indent}note ({m}): {note}")


def regime_warning(fit, w, n, data) -> str:
    """'warning: ...' where the rows read a domain more often, or leave it out longer, than
    any run the fit's data-constrained laws saw, and a line more where a law forecasts them
    rising past the ladder (`rise_warning`); '' where neither."""
    from codemix.analysis.datalaw import DataLawFit
    from codemix.analysis.regime import beyond_ladder, matched_shares, mild_note, target_epochs

    each: dict[str, list[str]] = {}
    most = 0.0  # the most epochs any row reads a domain, where a law says it reads past
    past: set[str] = set()  # how the laws' power overfitting terms go on, where rows read beyond
    shares: dict[str, float] = {}  # unique_share of a ladder matched to the rows' largest run
    blind = []  # metrics whose chosen law has no term for repetition at all
    for m, law in fit.scaling.items():
        each[m] = beyond = beyond_ladder(law, w, n, data)
        if not any("read up to" in x for x in beyond):
            continue
        shares = shares or matched_shares(law, w, n, data)
        most = max(most, *(float(e.max()) for e in target_epochs(law, w, n, data).values()))
        if not isinstance(law, DataLawFit):
            blind.append(m)
        elif "overfit" in law.extra:
            past.add(law.overfit_past)
    found: list[str] = []
    # laws fitted on other ladders (`codemix combine`) see other regimes: say whose it is
    named = len({tuple(v) for v in each.values()}) > 1
    for m, beyond in each.items():
        found += [x for x in (f"{m}: {b}" if named else b for b in beyond) if x not in found]
    rise = rise_warning(fit, w, n, data)
    if not found:
        return rise
    return (
        "warning: beyond the ladder's regimes: "
        + "; ".join(found)
        + ". The law has not seen this (codemix's validation ladders missed such runs one size "
        "up by 6-28 % on average, benchmarks/RESULTS.md): add ladder runs that do it "
        "(an arm with the domain capped, `[train] unique_tokens` or `unique_share`: "
        "repetition-matched proxies; stages of the target's length in tokens)"
        + (
            "; a ladder that reads each domain as often as these runs: codemix study run "
            "LADDER.toml --set "
            f"'train.unique_share={{{','.join(f'{d}={v:.4g}' for d, v in shares.items())}}}'"
            if shares
            else ""
        )
        + (
            f"; the law chosen for {', '.join(blind)} (joint) has no term for repetition: its "
            "prediction there assumes the ladder's"
            if blind
            else ""
        )
        + (
            "; the overfitting term goes on there along its tangent at the ladder's most "
            "epochs (codemix's capped runs one size up, read up to 35 times against 22: 7 % "
            "off, against 24 % as the power); a fit with --law ...+overfit_linear is the "
            "other reading to compare"
            if "tangent" in past
            else ""
        )
        + (
            "; and compare a fit with --law ...+overfit_linear, whose overfitting term held "
            "further past the ladder's epochs on codemix's ladders"
            if "power" in past
            else ""
        )
        + (
            ". " + mild_note(most)
            if mild_note(most) and not any("left out" in x for x in found)
            else ""
        )
        + ("\n" + rise if rise else "")
    )


def rise_warning(fit, w, n, data) -> str:
    """'warning: ...' where a metric's law forecasts the rows beyond the ladder's sizes far
    above the same schedules at its largest size; '' where none does."""
    from codemix.analysis.regime import RISE_TOL, rise_past_ladder

    said = []
    for m, law in fit.scaling.items():
        got = rise_past_ladder(law, w, n, data)
        if got:
            k, rows, most = got
            said.append(f"{m} up to {most:+.0%}" + (f" ({k} of {rows} rows)" if rows > 1 else ""))
    if not said:
        return ""
    return (
        "warning: the law forecasts a loss that rises past the ladder by more than "
        f"{RISE_TOL:.0%} over the same schedule at the ladder's largest size: "
        + "; ".join(said)
        + ". Such a forecast carries a rise on from the ladder's top rungs (codemix's "
        "grid without its stage-length arm forecast code-free cooldowns this way 1.7-3.3 "
        "times too high one size up, benchmarks/RESULTS.md): rank by it, but confirm the level "
        "(codemix confirm) before trusting it"
    )


def row_data(fit, df, source: str, tokens_col: str | None):
    """Each row's tokens and epochs (TargetData) for the fit's data-constrained laws, or None
    when it has none; the domains' epochs come from epochs.DOMAIN columns."""
    import numpy as np
    import polars as pl

    from codemix.analysis.datalaw import DataLawFit, TargetData
    from codemix.analysis.tables import resolve_columns
    from codemix.core.errors import CodemixError

    laws = [law for law in fit.scaling.values() if isinstance(law, DataLawFit)]
    if not laws:
        if tokens_col:
            raise CodemixError("--tokens-col: the fit has no data-constrained size law to use it")
        return None
    col = resolve_columns(tokens_col or "tokens", df.columns, source)[0]
    missing = [d for d in laws[0].domains if f"epochs.{d}" not in df.columns]
    if missing:
        raise CodemixError(
            f"{source} has no column 'epochs.{missing[0]}': the fit's data-constrained law "
            "predicts each row at its own epochs per domain (a study export has them)"
        )
    tokens = df[col].cast(pl.Float64, strict=False).to_numpy()
    epochs = df.select([f"epochs.{d}" for d in laws[0].domains]).to_numpy().astype(float)
    if not (np.all(np.isfinite(tokens) & (tokens > 0)) and np.all(np.isfinite(epochs))):
        raise CodemixError(f"{source}: columns {col!r} and epochs.* must be numbers, tokens > 0")
    return TargetData(tokens, None, epochs, _row_stages(laws[0], df, source))


def _row_stages(law, df, source: str):
    """Each row's tokens per mixture group from tokens.STAGE columns (a study export's), so
    that rows whose stages differ in length from the proxies' are predicted at their own;
    None where the fit has one group or the table lacks a stage's column."""
    import numpy as np

    from codemix.analysis.datalaw import group_stages
    from codemix.core.errors import CodemixError

    n_groups = len(law.groups or (1,))
    stage = group_stages(law.mixture_cols, law.groups)
    names = [f"tokens.{stage.get(i)}" for i in range(n_groups)]
    if n_groups < 2 or not all(stage.get(i) and c in df.columns for i, c in enumerate(names)):
        return None
    stages = df.select(names).cast(float, strict=False).to_numpy()
    if not np.all(np.isfinite(stages) & (stages >= 0)) or np.any(stages.sum(1) <= 0):
        raise CodemixError(
            f"{source}: columns {', '.join(names)} must be token counts >= 0 in every row "
            "(each row is predicted at its own stage lengths)"
        )
    return stages


def target_epoch_cols(fit, w, size: float, data) -> dict:
    """epochs.DOMAIN at the target for every row, from the first data-constrained law."""
    from codemix.analysis.regime import target_epochs

    for law in fit.scaling.values():
        ep = target_epochs(law, w, size, data)
        if ep is not None:
            return {f"epochs.{d}": v for d, v in ep.items()}
    return {}
