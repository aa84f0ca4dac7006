"""`codemix fit`, `predict`, `scaling` and `optimum`: the analysis subcommands.

Only argparse loads here; each handler imports the analysis package when it runs.
"""

from __future__ import annotations

import argparse

from codemix.analysis.lawnames import LAWS as SIZE_LAWS
from codemix.analysis.lawnames import OVERFIT_PAST, R_STAR_MODES, TIE_POINTS
from codemix.cli._args import at_least
from codemix.cli._fitlines import data_law_lines
from codemix.cli._target import (
    epochs_line,
    fit_warnings,
    print_assumed,
    regime_warning,
    row_data,
    target_data,
    target_data_args,
    target_epoch_cols,
)


def register(sub) -> None:
    p = sub.add_parser(
        "fit",
        help="fit response surfaces (and size laws) from a results table",
        description="Fit a response surface from mixture weights to each metric, the model "
        "family chosen by k-fold cross-validation, and, with --size-col and runs at 3+ "
        "sizes, a joint mixture-and-size law. Writes FIT.json.",
    )
    p.add_argument(
        "results",
        nargs="+",
        metavar="RESULTS",
        help="CSV or parquet table(s), one row per run; several are joined on --on",
    )
    p.add_argument(
        "--mixture-cols",
        action="append",
        metavar="COLS",
        help="mixture weight columns: comma-separated names or PREFIX*; repeat once per "
        "stage to fit on several stages' mixtures (e.g. 'mix.init.*' and 'mix.cooldown.*'; "
        "the default for a study export: one per stage of its mix.STAGE.DOMAIN columns)",
    )
    p.add_argument(
        "--stage-cols",
        action="append",
        metavar="COLS",
        help="free stage variables (names or PREFIX*), e.g. a column holding the cooldown's "
        "share of the tokens: inputs of the fit next to the mixtures",
    )
    p.add_argument(
        "--metric",
        action="append",
        required=True,
        metavar="NAME",
        help="metric column (or PREFIX*) to fit; repeat for several",
    )
    p.add_argument(
        "--size-col",
        metavar="COL",
        help="column of model parameters (params or non_embedding_params of a study export: "
        "then a preset such as 2.8B can be a target)",
    )
    p.add_argument(
        "--tokens-col",
        metavar="COL",
        help="column of each run's training tokens (default: tokens, where the table has it "
        "and epochs.DOMAIN columns): with the epochs, the size law can count repeated tokens",
    )
    p.add_argument(
        "--epochs-cols",
        metavar="COLS",
        help="columns of each domain's epochs, named COL.DOMAIN or PREFIX* (default: epochs.*)",
    )
    p.add_argument(
        "--law",
        choices=SIZE_LAWS,
        default="auto",
        help="size law: joint (mixture and N), joint_data (plus each domain's tokens counted "
        "with their repetitions), +recency (each stage's tokens fade with the tokens trained "
        "after it), +overfit (a term that lets the loss rise with repetition; +overfit_n: that "
        "term growing with N, to a ceiling; +overfit_linear: "
        "the same, linear in the epochs past an onset, by --law only), +forget (a "
        "domain left out of the last stages is forgotten, more the longer they are), +revert (its "
        "loss goes back toward that of a model that never saw it, and no further), or auto: the "
        "one that predicts held-out runs best, where the table has tokens and epochs (default)",
    )
    p.add_argument(
        "--r-star",
        choices=R_STAR_MODES,
        default="auto",
        help="how the data law's R* (how fast repeated tokens lose value) is fitted: shared by "
        "the domains, one per domain, or auto: with --law auto, the best data law's "
        "per-domain twin is taken where it predicts the held-out runs better (by more than "
        "0.1 %%), else one shared (default)",
    )
    p.add_argument(
        "--overfit-past",
        choices=OVERFIT_PAST,
        default="tangent",
        help="how the +overfit term (C rbar^kappa, rbar the weighted extra epochs) goes on "
        "past the most epochs any fitted run read: along its tangent there (default; on "
        "codemix's ladders the power, fitted below, rose far too fast past them), or as the "
        "power",
    )
    p.add_argument(
        "--tie-point",
        choices=TIE_POINTS,
        default="median",
        help="the point a size law predicts where its contest ended in a tie (laws within "
        "one standard error of the best held out, which the intervals span): the median of "
        "the tied laws' predictions (default: which law of a tie wins can turn with a seed or "
        "a library build, and on codemix's ladders the median missed less one size up), or "
        "the winner's; predict, optimum, confirm and the report use it",
    )
    p.add_argument(
        "--code-domains",
        metavar="A,B",
        help="the domains that are code (default: the table's code_domains column, as a study "
        "export has it); the report draws code shares from them",
    )
    p.add_argument(
        "--on",
        default="index",
        metavar="COL",
        help="key column joining several RESULTS files (default: index)",
    )
    p.add_argument(
        "--stack",
        action="store_true",
        help="stack the RESULTS files' rows instead of joining them: a ladder and its extra "
        "arms (stage lengths, repetition-capped runs) exported from several studies",
    )
    p.add_argument(
        "--families",
        metavar="LIST",
        help="comma-separated candidate families (default: all of linear, "
        "quadratic, exp, exp_log, gp, gp_exp, plus their stack)",
    )
    p.add_argument(
        "--link",
        action="append",
        default=[],
        metavar="ACC[@CHANCE]",
        help="an accuracy column to predict from its task's bpb (task.F.acc from task.F.bpb, "
        "which must be a --metric) through a sigmoid fitted on the runs above chance; the "
        "chance level comes from task.F.chance or after @; repeat for several",
    )
    p.add_argument(
        "--folds", type=at_least(2), default=5, help="cross-validation folds (default 5)"
    )
    p.add_argument(
        "--raw-intervals",
        action="store_true",
        help="keep each family's own prediction intervals (default: scaled so that 90%% of "
        "the out-of-fold runs fall inside, split-conformal)",
    )
    p.add_argument(
        "--n-boot",
        type=at_least(0),
        default=200,
        help="bootstrap resamples for size laws (default 200)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for folds and bootstrap")
    _add_jobs(p)
    p.add_argument("-o", "--output", required=True, metavar="FIT.json", help="output fit file")
    p.set_defaults(func=_fit)

    p = sub.add_parser(
        "combine",
        help="one fit file from fits of the same mixtures, each metric from its own ladder",
        description="Write one FIT.json that takes each metric from the fit that has it, so "
        "that predict, optimum and report see every metric: e.g. the text fitted on a ladder "
        "with a repetition-matched arm and the code on one without. The fits must share their "
        "mixture columns, size column and vocabulary; optimum searches the mixtures every "
        "fit's runs covered.",
    )
    p.add_argument("fits", nargs="+", metavar="FIT.json", help="two or more fit files")
    p.add_argument("-o", "--output", required=True, metavar="FIT.json", help="output fit file")
    p.set_defaults(func=_combine)

    p = sub.add_parser(
        "predict",
        help="predict metrics with intervals for the mixtures of a table",
        description="One row per input row: each metric's prediction and the bounds of its "
        "prediction interval, at the training size or, with --size, from the size law.",
    )
    p.add_argument("fit", metavar="FIT.json")
    p.add_argument(
        "--mixtures",
        required=True,
        metavar="TABLE",
        help="CSV or parquet with the fit's mixture columns",
    )
    p.add_argument(
        "--size",
        metavar="N",
        help="target size: a preset (470M, 2.8B: its parameters at the fit's vocabulary) or a "
        "count (2.5e9)",
    )
    p.add_argument(
        "--size-col",
        metavar="COL",
        help="predict each row at the size in this column (e.g. confirmatory runs' params); "
        "a data-constrained law also reads each row's tokens and epochs (--tokens-col, "
        "epochs.*)",
    )
    p.add_argument(
        "--tokens-col",
        metavar="COL",
        help="with --size-col: each row's training tokens (default: tokens, where present)",
    )
    target_data_args(p)
    p.add_argument("--level", type=_level, default=0.9, help="interval level (default 0.9)")
    p.add_argument("-o", "--output", required=True, metavar="PRED.csv")
    p.set_defaults(func=_predict)

    p = sub.add_parser(
        "scaling",
        help="fit the Chinchilla law L(N, D) (Approach 3) with bootstrap errors",
        description="Fit L(N, D) = E + A/N^alpha + B/D^beta by the summed Huber loss "
        "(delta 1e-3) on log residuals, L-BFGS-B from a grid of starts; bootstrap SEs.",
    )
    p.add_argument("data", metavar="DATA.csv")
    p.add_argument(
        "--form",
        choices=("chinchilla", "power"),
        default="chinchilla",
        help="chinchilla: L(N, D); power: L(N) = E + A N^-alpha",
    )
    p.add_argument("--params-col", required=True, metavar="COL", help="model parameters N")
    p.add_argument(
        "--tokens-col", metavar="COL", help="training tokens D (chinchilla; or give --flops-col)"
    )
    p.add_argument("--flops-col", metavar="COL", help="training FLOPs C; D = C / (6 N)")
    p.add_argument("--loss-col", required=True, metavar="COL", help="final loss")
    p.add_argument(
        "--drop-highest-loss",
        type=int,
        default=0,
        metavar="K",
        help="leave out the K runs of highest loss (Besiroglu et al. drop 5 of 245; default 0)",
    )
    p.add_argument(
        "--n-boot", type=at_least(0), default=1000, help="bootstrap resamples (default 1000)"
    )
    _add_jobs(p)
    p.add_argument(
        "--refine-starts",
        type=at_least(0),
        default=200,
        metavar="K",
        help="run L-BFGS from the K best points of the 4,500-point start grid "
        "(0: from all of them; default 200)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", required=True, metavar="FIT.json")
    p.set_defaults(func=_scaling)

    p = sub.add_parser(
        "optimum",
        help="the best mixture under an objective, its uncertainty and the Pareto front",
        description="Objectives: min:METRIC, max:METRIC, min:METRIC,OTHER<=VALUE, "
        "weighted:M1=W1,M2=W2 (minimised).",
    )
    p.add_argument("fit", metavar="FIT.json")
    p.add_argument("--objective", required=True, help="what to optimise (see above)")
    p.add_argument(
        "--target",
        metavar="SIZE",
        help="target size: a preset (470M, 2.8B: its parameters at the fit's vocabulary) or a "
        "count (2.5e9); omitted: the training size",
    )
    p.add_argument(
        "--pareto",
        metavar="M1,M2",
        help="two metrics for the Pareto front (default: the first two of the fit)",
    )
    p.add_argument(
        "--candidates", type=at_least(1), default=4000, help="mixtures searched (default 4000)"
    )
    p.add_argument(
        "--full-simplex",
        action="store_true",
        help="search every mixture (default: only weights within the range the runs covered, "
        "where the fit does not extrapolate)",
    )
    target_data_args(p)
    p.add_argument("--draws", type=at_least(0), default=200, help="draws for the argmax spread")
    p.add_argument("--level", type=_level, default=0.9, help="interval level (default 0.9)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_optimum)


def _level(text: str) -> float:
    """An argparse type: an interval's level, a share strictly between 0 and 1."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"{v} is not a share strictly between 0 and 1 (0.9: 90 %)")
    return v


def _check_output(path: str) -> None:
    from pathlib import Path

    from codemix.core.errors import CodemixError

    parent = Path(path).parent
    if not parent.is_dir():
        raise CodemixError(f"output folder {parent} does not exist")


def _combine(args: argparse.Namespace) -> int:
    from codemix.analysis.fitfile import combine_fits, load_fit, save_fit
    from codemix.core.errors import CodemixError

    if len(set(args.fits)) < len(args.fits):
        raise CodemixError("combine: a fit file is named twice")
    _check_output(args.output)
    fits = {path: load_fit(path) for path in args.fits}  # every file read before any write
    merged = combine_fits(fits)
    save_fit(merged, args.output)
    for path, f in fits.items():
        laws = ", ".join(f"{m} ({getattr(law, 'name', law.form)})" for m, law in f.scaling.items())
        print(f"{path}: {', '.join(f.metrics)}" + (f"; size laws: {laws}" if laws else ""))
    lo, hi = merged.data["weights_min"], merged.data["weights_max"]
    span = ", ".join(
        f"{c} {a:.2f}-{b:.2f}" for c, a, b in zip(merged.mixture_cols, lo, hi, strict=True)
    )
    print(f"wrote {args.output}: {len(merged.metrics)} metrics; mixtures every fit covered: {span}")
    return 0


def _export_mixtures(paths: list[str]) -> list[str]:
    """A study export's stage mixtures (`mix.init.*`, `mix.cooldown.*`), said as it is
    taken; a table without them needs --mixture-cols."""
    from codemix.analysis.tables import stage_mixtures, table_columns
    from codemix.core.errors import CodemixError

    columns = [c for path in paths for c in table_columns(path)]
    found = stage_mixtures(columns)
    if not found:
        raise CodemixError(
            f"{paths[0]}: no mix.STAGE.DOMAIN columns of a study export; name the mixture "
            "weight columns with --mixture-cols"
        )
    print(f"mixtures: {', '.join(found)} (one per stage of the export; --mixture-cols to choose)")
    return found


def _fit(args: argparse.Namespace) -> int:
    import numpy as np

    from codemix.analysis.decision import describe, rising_warning
    from codemix.analysis.fit import fit_results
    from codemix.analysis.fitfile import save_fit
    from codemix.analysis.link import link_bpb_metric, parse_link
    from codemix.analysis.regime import assumed_unique
    from codemix.analysis.scaling import ScalingConfig, exponent_warnings
    from codemix.analysis.surfaces import FAMILIES, SurfaceConfig
    from codemix.analysis.tables import load_results, split_domains

    _check_output(args.output)
    links = [parse_link(x) for x in args.link]
    for acc, _ in links:
        link_bpb_metric(acc)  # a malformed --link fails before any fitting
    extra = [c for acc, _ in links for c in (acc, acc.rpartition(".")[0] + ".chance")]
    fams = tuple(f.strip() for f in args.families.split(",")) if args.families else FAMILIES
    scfg = SurfaceConfig(
        families=tuple(f for f in fams if f != "stack") or FAMILIES,
        stack=not args.families or "stack" in fams,
        folds=args.folds,
        seed=args.seed,
        calibrate=not args.raw_intervals,
    )
    if not args.mixture_cols:
        args.mixture_cols = _export_mixtures(args.results)
    tokens_col = args.tokens_col or _default_tokens_col(args)
    table = load_results(
        args.results,
        args.mixture_cols,
        args.metric,
        args.size_col,
        tokens_col,
        on=None if args.stack else args.on,
        stage_cols=args.stage_cols,
        extra=extra,
        epochs_cols=args.epochs_cols,
    )
    if table.left_out:
        print(table.left_out_line())
    fit = fit_results(
        table,
        scfg,
        ScalingConfig(n_boot=args.n_boot, seed=args.seed, jobs=_jobs(args)),
        progress=True,
        code_domains=split_domains(args.code_domains),
        links=links,
        law=args.law,
        r_star=args.r_star,
        overfit_past=args.overfit_past,
    )
    for law in fit.scaling.values():
        law.tie_point = args.tie_point
    save_fit(fit, args.output)
    n_sizes = 0 if table.size is None else len(np.unique(table.size))
    if 0 < n_sizes < 3:
        print(
            f"no size law: the runs cover {n_sizes} size(s) of {args.size_col} "
            f"({', '.join(f'{v:.3g}' for v in np.unique(table.size))}) and a size law needs 3 "
            "or more; the surfaces below, on the largest size's runs, predict at that size only"
        )
    for m, s in fit.surfaces.items():
        sc = s.cv_score
        print(
            f"{m}: {s.family} (CV RMSE {sc.rmse:.4g}, Spearman {sc.spearman:.3f}, "
            f"{s.folds}-fold on {s.n_train} runs; intervals x{s.interval_scale:.2f} to cover "
            f"{s.level:.0%} out of fold)"
        )
        for c in s.cv:
            print(
                f"    {c.family:10s} CV RMSE {c.rmse:.4g}  Spearman {c.spearman:.3f}  "
                f"PI{s.level * 100:.0f} coverage {c.coverage:.2f}"
                + (f"  ({c.error})" if c.error else "")
            )
        if m in fit.scaling:
            law = fit.scaling[m]
            name = getattr(law, "name", law.form)
            print(
                f"    size law ({name}): Scheffe-{law.terms} exponents, alpha "
                f"{law.alpha:.3f} over sizes " + ", ".join(f"{v:.3g}" for v in law.sizes)
            )
            for line in data_law_lines(law, m):
                print(f"    {line}")
            note = assumed_unique(law, None)
            if note:
                print(f"    note: {note}")
            for why in exponent_warnings(law):
                print(f"    warning: {why}")
            sel = law.selection.get("terms", law.selection)
            if sel:
                scores = ", ".join(f"{t} {v['rmse_log']:.4g}" for t, v in sel["scores"].items())
                print(f"    held-out RMSE of log {m} ({sel['held_out']}): {scores}")
            if "held_out_coverage" in sel and law.form == "joint":
                print(
                    f"    the largest size predicted from the smaller ones: "
                    f"{sel['held_out_coverage']:.0%} inside the {law.level:.0%} intervals; "
                    f"intervals widened x{law.interval_scale:.2f}"
                )
        if m in fit.decision:
            print("    decision accuracy (pairs of mixtures ranked as the larger size ranks them):")
            for line in describe(fit.decision[m]):
                print(f"      {line}")
            rising = rising_warning(m, fit.decision[m])
            if rising:
                print(f"    warning: {rising}")
    for m, link in fit.links.items():
        top, k, b0 = link.params
        rmse = float(np.sqrt(np.mean(link.resid**2)))
        print(
            f"{m}: from {link.bpb_metric}, {link.chance:.3g} + ({top:.3g} - {link.chance:.3g}) "
            f"* sigmoid(-{k:.3g} (bpb - {b0:.4g})) on {link.n_used} of {link.n_runs} runs above "
            f"chance (RMSE {rmse:.3g}; bpb {link.bpb_range[0]:.3g} to {link.bpb_range[1]:.3g})"
        )
        if abs(top - link.chance) * min(1.0, k * np.ptp(link.bpb_range) / 4) < 0.01:
            print(
                f"    warning: the link is nearly flat over the runs fitted: {m} does not yet "
                f"track {link.bpb_metric} at these sizes, so predicted accuracies say little"
            )
        if link.n_used < link.n_runs / 2:
            print(
                f"    warning: most runs are at chance on {m}; the link rests on "
                f"{link.n_used} runs and its intervals are wide"
            )
    print(f"wrote {args.output}")
    return 0


def _default_tokens_col(args) -> str | None:
    """`tokens` when the table is a study export with epochs columns and sizes are fitted
    (from the files' headers: the table itself is read once, by load_results)."""
    from pathlib import Path

    import polars as pl

    if not args.size_col or args.law == "joint":
        return None
    cols = set()
    for path in args.results:
        if not Path(path).is_file():
            return None  # load_results names the missing file
        parquet = Path(path).suffix.lower() in (".parquet", ".pq")
        try:
            scan = pl.scan_parquet(path) if parquet else pl.scan_csv(path)
            cols |= set(scan.collect_schema().names())
        except (pl.exceptions.PolarsError, OSError):
            return None  # load_results says what is wrong with it
    if "tokens" in cols and (args.epochs_cols or any(c.startswith("epochs.") for c in cols)):
        return "tokens"
    return None


def _predict(args: argparse.Namespace) -> int:
    import io

    import numpy as np
    import polars as pl

    from codemix.analysis.fit import predict
    from codemix.analysis.fitfile import atomic_write_text, load_fit
    from codemix.analysis.intervals import coverage
    from codemix.analysis.optimum import outside_ranges
    from codemix.analysis.sizes import resolve_size
    from codemix.analysis.tables import mixture_array, read_table, resolve_columns
    from codemix.core.errors import CodemixError

    _check_output(args.output)
    if args.size and args.size_col:
        raise CodemixError("give --size or --size-col, not both")
    fit = load_fit(args.fit)
    size = resolve_size(args.size, fit, "--size") if args.size else None
    df = read_table(args.mixtures)
    w = mixture_array(df, list(fit.mixture_cols), args.mixtures, fit.groups)
    if args.tokens_col and not args.size_col:
        raise CodemixError("--tokens-col goes with --size-col (each row's own size and tokens)")
    if args.size_col and (args.target_tokens or args.unique_tokens):
        raise CodemixError(
            "--target-tokens and --unique-tokens go with --size; with --size-col each row's "
            "own tokens and epochs are read"
        )
    if (args.target_tokens or args.unique_tokens) and not size:
        raise CodemixError("--target-tokens and --unique-tokens need a target --size")
    data = target_data(args, fit)
    epoch_cols = {}
    if args.size_col:
        col = resolve_columns(args.size_col, df.columns, args.mixtures)[0]
        n = df[col].cast(pl.Float64, strict=False).to_numpy()
        if not np.all(np.isfinite(n) & (n > 0)):
            raise CodemixError(f"{args.mixtures}: column {col!r} must be a positive number")
        data = row_data(fit, df, args.mixtures, args.tokens_col)
        preds = predict(fit, w, n, args.level, data)
        where = f"at each row's {col} (size law)"
        if data is not None:
            where += ", tokens and epochs"
    else:
        preds = predict(fit, w, size.count if size else None, args.level, data)
        where = f"at {size}, from the size law" if size else "at the training size"
        if size:
            epoch_cols = target_epoch_cols(fit, w, size.count, data)
    cols = {}
    pct = f"{round(args.level * 100):d}"
    for m, (mean, lo, hi) in preds.items():
        # beside observed values (e.g. confirmatory runs) the predictions get their own names
        name = f"predicted_{m}" if m in df.columns else m
        cols[name] = mean
        cols[f"{name}_lo{pct}"] = lo
        cols[f"{name}_hi{pct}"] = hi
    cols |= {(f"predicted_{k}" if k in df.columns else k): v for k, v in epoch_cols.items()}
    out = df.with_columns(pl.Series(k, v) for k, v in cols.items())
    buf = io.StringIO()
    out.write_csv(buf)
    atomic_write_text(args.output, buf.getvalue())
    print(f"wrote {len(out)} predictions {where} to {args.output}")
    outside = outside_ranges(fit, w)
    if outside is None:
        print(
            f"note: {args.fit} does not record the weight ranges of its runs (an older fit), "
            "so rows that extrapolate cannot be told; refit to have them checked"
        )
    elif len(outside.rows):
        print(_extrapolation_warning(df, outside))
    if args.size_col or size:
        regime = regime_warning(fit, w, n if args.size_col else size.count, data)
        if regime:
            print(regime)
    if size:
        print_assumed(fit, data)
    if args.size_col or size:  # predictions from the size law: what the fit doubts of it
        for line in fit_warnings(fit):
            print(f"warning from the fit: {line}")
    for m, (mean, lo, hi) in preds.items():
        if m in df.columns:
            c = coverage(df[m].cast(pl.Float64, strict=False).to_numpy(), mean, lo, hi)
            print(
                f"  observed {m}: {c.inside} of {c.n} inside the {pct} % interval, "
                f"mean |predicted - observed| {c.mean_abs_error:.4g}"
            )
    return 0


def _extrapolation_warning(df, outside, max_names: int = 10, max_columns: int = 3) -> str:
    """'warning: rows 3, 7 lie outside ... (mix_code 0.95 > 0.8, ...): ...', naming rows by
    a trial or index column where the table has one, else by their 0-based position."""
    key = next((c for c in ("trial", "index") if c in df.columns), None)
    at = outside.rows.tolist()
    names = list(dict.fromkeys(str(v) for v in df[key].gather(at))) if key else list(map(str, at))
    shown = ", ".join(names[:max_names])
    if len(names) > max_names:
        shown += f" and {len(names) - max_names} more"
    what = ("row" if len(names) == 1 else "rows") + (f" with {key}" if key else "")
    verb = "lies" if len(names) == 1 else "lie"
    passed = [_passed(*c) for c in outside.columns]
    detail = ", ".join(passed[:max_columns]) + (", ..." if len(passed) > max_columns else "")
    return (
        f"warning: {what} {shown} {verb} outside the weight ranges of the fitted runs "
        f"({detail}): their predictions extrapolate"
    )


def _passed(col: str, value: float, op: str, bound: float) -> str:
    """'mix_code 0.95 > 0.8': the numbers with the fewest digits (2+) that tell them apart."""
    for digits in range(2, 7):
        a, b = f"{value:.{digits}g}", f"{bound:.{digits}g}"
        if a != b:
            break
    return f"{col} {a} {op} {b}"


def _scaling(args: argparse.Namespace) -> int:
    import json

    from codemix.analysis.fitfile import atomic_write_text
    from codemix.analysis.scaling import PARAM_NAMES, ScalingConfig, fit_chinchilla, fit_power_law
    from codemix.analysis.tables import read_table, resolve_columns
    from codemix.core.errors import CodemixError

    _check_output(args.output)
    df = read_table(args.data)
    n_col = resolve_columns(args.params_col, df.columns, args.data)[0]
    l_col = resolve_columns(args.loss_col, df.columns, args.data)[0]
    cols = [n_col, l_col]
    if args.form == "chinchilla":
        if not (args.tokens_col or args.flops_col):
            raise CodemixError("--form chinchilla needs --tokens-col or --flops-col")
        d_spec = args.tokens_col or args.flops_col
        cols.append(resolve_columns(d_spec, df.columns, args.data)[0])
    for c in cols:
        if not df.schema[c].is_numeric():
            raise CodemixError(f"{args.data}: column {c!r} is not numeric")
    if args.drop_highest_loss:
        if not 0 < args.drop_highest_loss < df.height - 5:
            raise CodemixError(f"--drop-highest-loss {args.drop_highest_loss} leaves too few runs")
        df = df.sort(l_col).head(df.height - args.drop_highest_loss)
    n = df[n_col].to_numpy().astype(float)
    loss = df[l_col].to_numpy().astype(float)
    cfg = ScalingConfig(
        n_boot=args.n_boot, seed=args.seed, refine_starts=args.refine_starts, jobs=_jobs(args)
    )
    if args.form == "chinchilla":
        d = df[cols[2]].to_numpy().astype(float)
        if not args.tokens_col:
            d = d / (6 * n)
        fit = fit_chinchilla(n, d, loss, cfg, progress=True)
        names = PARAM_NAMES
    else:
        fit = fit_power_law(n, loss, cfg, progress=True)
        names = ("E", "A", "alpha")
    print(
        f"{args.form} law on {fit.n_runs} runs of {args.data} "
        f"(summed Huber, delta {cfg.delta}, log residuals); {args.n_boot} bootstrap resamples"
    )
    se = fit.se
    for k in names:
        print(f"  {k:6s} {fit.params[k]:12.5g}  (bootstrap SE {se[k]:.3g})")
    atomic_write_text(args.output, json.dumps(fit.to_dict(), indent=1) + "\n")
    print(f"wrote {args.output}")
    return 0


def _optimum(args: argparse.Namespace) -> int:
    import numpy as np

    from codemix.analysis.fitfile import load_fit
    from codemix.analysis.optimum import edge_stages, find_optimum, pareto_front, parse_objective
    from codemix.analysis.sizes import resolve_size
    from codemix.core.errors import CodemixError

    fit = load_fit(args.fit)
    objective = parse_objective(args.objective, fit.metrics)
    target = resolve_size(args.target, fit, "--target") if args.target else None
    size = target.count if target else None
    if size is not None:
        need = [fit.links[m].bpb_metric if m in fit.links else m for m in objective.metrics]
        missing = [m for m in need if m not in fit.scaling]
        if missing:
            raise CodemixError(
                f"the fit has no size law for {', '.join(missing)}: fit with --size-col on "
                "runs at 3 or more sizes, or leave out --target"
            )
    if (args.target_tokens or args.unique_tokens) and not target:
        raise CodemixError("--target-tokens and --unique-tokens need a --target size")
    data = target_data(args, fit)
    where = f"at {target.short}" if target else "at the training size"
    opt = find_optimum(
        fit,
        objective,
        size,
        args.candidates,
        args.draws,
        args.level,
        args.seed,
        within_data=not args.full_simplex,
        data=data,
    )
    pct = f"{round(args.level * 100)} %"
    space = "anywhere on the simplex" if args.full_simplex else "within the runs' weight ranges"
    print(
        f"optimum for {objective.text} at {target or 'the training size'}; "
        f"{args.candidates} candidate mixtures {space}:"
    )
    for c, v, lo, hi in zip(
        fit.mixture_cols, opt.mixture, opt.argmax_lo, opt.argmax_hi, strict=True
    ):
        print(f"  {c:30s} {v:6.3f}   argmax {pct} interval [{lo:.3f}, {hi:.3f}]")
    print(
        f"  (argmax spread over {opt.n_draws} "
        + ("bootstrap draws of the size law)" if size else "posterior draws of the surfaces)")
    )
    for m, (mean, lo, hi) in opt.predicted.items():
        print(f"  predicted {m} {where}: {mean:.4g}  [{lo:.4g}, {hi:.4g}] ({pct} PI)")
    edge = [] if args.full_simplex else edge_stages(fit, opt.mixture)
    if edge:
        print(
            f"  note: the optimum lies at the edge of the explored range for {', '.join(edge)}:"
            " explore further (widen that stage's search range) before trusting it"
        )
    if size is not None:
        line = epochs_line(fit, opt.mixture[None, :], size, data)
        if line:
            print(f"  {line}")
        regime = regime_warning(fit, opt.mixture[None, :], size, data)
        if regime:
            print(f"  {regime}")
        print_assumed(fit, data, "  ")
        for line in fit_warnings(fit):
            print(f"  warning from the fit: {line}")
    pair = args.pareto.split(",") if args.pareto else fit.metrics[:2]
    if len(pair) == 2:
        for m in pair:
            if m not in fit.metrics:
                raise CodemixError(f"--pareto names {m!r}; the fit has {', '.join(fit.metrics)}")
        w, a, b = pareto_front(
            fit,
            pair[0],
            pair[1],
            size,
            args.candidates,
            args.seed,
            not args.full_simplex,
            data,
        )
        print(f"Pareto front {where} ({pair[0]} vs {pair[1]}, both minimised), {len(w)} mixtures:")
        print("  (columns: " + " | ".join(", ".join(g) for g in fit.mixture_groups) + ")")
        step = max(len(w) // 12, 1)
        edges = np.cumsum(fit.group_sizes)[:-1]
        for i in range(0, len(w), step):
            mix = " | ".join(" ".join(f"{x:.2f}" for x in g) for g in np.split(w[i], edges))
            print(f"  {a[i]:.4g}  {b[i]:.4g}   [{mix}]")
    return 0


def _add_jobs(p) -> None:
    p.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="processes for bootstrap and held-out fits (default: every CPU this process may "
        "use; the result is the same for any N)",
    )


def _jobs(args) -> int:
    """--jobs, checked; every usable CPU when not given."""
    from codemix.analysis._parallel import cpu_count
    from codemix.core.errors import CodemixError

    if args.jobs is None:
        return cpu_count()
    if args.jobs < 1:
        raise CodemixError(f"--jobs must be at least 1, got {args.jobs}")
    return args.jobs
