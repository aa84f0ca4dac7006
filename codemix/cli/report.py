"""`codemix report`: one self-contained HTML file from a study or a results table."""

from __future__ import annotations

import argparse

from codemix.cli._target import target_data, target_data_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write the interactive HTML report of a study or results table",
        description="One self-contained HTML file (plotly, works offline): study progress, "
        "NL-versus-code Pareto front, response curves and a contour over stage shares, "
        "scaling curves, realised mixture and epochs, predictions and calibration.",
    )
    p.add_argument(
        "source",
        metavar="STUDY.toml|RESULTS",
        help="a study spec (its storage is read) or a results table (.csv/.parquet)",
    )
    p.add_argument("-o", "--output", required=True, metavar="report.html")
    p.add_argument("--storage", metavar="URL", help="the study's storage (default: beside it)")
    p.add_argument(
        "--nl-metric", default="bpb.text", help="column of the NL metric (default bpb.text)"
    )
    p.add_argument(
        "--code-metric", default="bpb.code", help="column of the code metric (default bpb.code)"
    )
    p.add_argument("--title", help="page title (default: the study name or file name)")
    p.add_argument(
        "--fit",
        metavar="FIT.json",
        help="a fit with size laws (codemix fit --size-col): adds predictions",
    )
    p.add_argument(
        "--target",
        metavar="SIZE",
        default="2.8B",
        help="target size for predictions: a preset (its parameters at the fit's vocabulary) "
        "or a count (2.5e9); default 2.8B",
    )
    target_data_args(p)
    p.set_defaults(func=_report)


def _results(args):
    from pathlib import Path

    import polars as pl

    from codemix.core.errors import CodemixError

    src = Path(args.source)
    if src.suffix == ".json":  # a FIT.json where the runs belong: say where it goes
        raise CodemixError(
            f"{src} is not a study spec or a results table; a fit file goes with --fit, beside "
            f"the runs it was fitted on: codemix report STUDY.toml|RESULTS --fit {src} -o ..."
        )
    if src.suffix == ".toml":
        import optuna

        from codemix.optimizer.export import rows
        from codemix.optimizer.space import load_study
        from codemix.optimizer.storage import default_url, open_storage, redact

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        spec = load_study(src)
        url = args.storage or default_url(src)
        storage = open_storage(url, existing=True)
        try:
            study = optuna.load_study(study_name=spec.name, storage=storage)
        except KeyError:
            raise CodemixError(f"no study {spec.name!r} in {redact(url)}; run it first") from None
        data = rows(study)
        if not data:
            raise CodemixError(f"study {spec.name!r} has no results yet")
        return pl.DataFrame(data, infer_schema_length=None), spec.name, _objective_text(spec)
    from codemix.analysis.tables import read_table

    return read_table(src), src.stem, None


def _objective_text(spec) -> str | None:
    """The study's objective as `codemix optimum` writes one: its first objective, or the
    weighted sum (a maximised metric weighs negatively)."""
    if not spec.objectives:
        return None
    sign = {"minimize": 1.0, "maximize": -1.0}
    if spec.weighted:
        terms = (f"{o.metric}={(o.weight or 0.0) * sign[o.direction]:g}" for o in spec.objectives)
        return "weighted:" + ",".join(terms)
    first = spec.objectives[0]
    return f"{first.direction[:3]}:{first.metric}"


def _report(args) -> int:
    from pathlib import Path

    from codemix.analysis.report import ReportInput, write_report
    from codemix.core.errors import CodemixError

    if (args.target_tokens or args.unique_tokens) and not args.fit:
        raise CodemixError("--target-tokens and --unique-tokens need --fit (and --target)")
    df, name, objective = _results(args)
    for m in (args.nl_metric, args.code_metric):
        if m not in df.columns:
            raise CodemixError(f"{args.source}: no column {m!r} (see --nl-metric/--code-metric)")
    r = ReportInput(
        df,
        title=args.title or f"codemix report: {name}",
        nl_metric=args.nl_metric,
        code_metric=args.code_metric,
    )
    if args.fit:
        from codemix.analysis.fitfile import load_fit
        from codemix.analysis.report import from_fit
        from codemix.analysis.sizes import resolve_size

        fit = load_fit(args.fit)
        lawless = [
            m for m in dict.fromkeys((args.nl_metric, args.code_metric)) if m not in fit.scaling
        ]
        if lawless and all(m in fit.surfaces for m in lawless):
            raise CodemixError(
                f"--fit {args.fit} has no size law for {', '.join(lawless)}, and the report's "
                "predictions are at a target size: fit runs at 3 or more sizes with --size-col, "
                "or leave out --fit for a report of the runs alone"
            )
        target = resolve_size(args.target, fit, "--target")
        from_fit(r, fit, target, data=target_data(args, fit), study_objective=objective)
        print(f"predictions at {target}")
    n = write_report(r, Path(args.output))
    print(f"wrote {args.output} ({n} figures); open it in any browser, no network needed")
    return 0
