"""`codemix confirm`: train the predicted optimum, comparison schedules and baselines one size
up, and score the fit on them."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "confirm",
        help="run the confirmation study of a fit at a larger size and score the predictions",
        description="Write and run a grid study at SIZE over named schedules: the fit's "
        "predicted optimum, --compare schedules spread over the predicted range of the "
        "objective, text only, and any --baseline; then export it, predict every run at its "
        "own size, tokens and epochs, and write the calibration (observed against predicted "
        "with intervals, rank correlation, regret of the optimum) and a report. Run it again "
        "to resume.",
    )
    p.add_argument("fit", metavar="FIT.json")
    p.add_argument("--study", required=True, metavar="SPEC.toml", help="the ladder's study spec")
    p.add_argument("--size", required=True, help="confirmation size: a preset (e.g. 4M, 124M)")
    p.add_argument(
        "--compare", type=int, default=3, metavar="K", help="comparison schedules (default 3)"
    )
    p.add_argument(
        "--seeds",
        type=int,
        metavar="K",
        help="paired seeds a schedule (default: the study spec's [study].seeds, else 1): at "
        "proxy scale schedules often differ by about a run's seed noise, which K >= 2 "
        "measures and averages out",
    )
    p.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="NAME=SCHEDULE",
        help="a schedule of your own, e.g. paper=init.code_frac=0.25,cooldown.code_frac=0.25 "
        "(repeatable); text only is always added",
    )
    p.add_argument(
        "--objective",
        help="what the optimum optimises (see codemix optimum; default: min: the study's first "
        "objective)",
    )
    p.add_argument(
        "--out", metavar="DIR", help="folder of the confirmation (default: runs/STUDY-confirm-SIZE)"
    )
    p.add_argument("--storage", metavar="URL", help="the study's storage (default: DIR/confirm.db)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--dry-run", action="store_true", help="only write DIR/confirm.toml")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_confirm)


def _confirm(args) -> int:
    import json
    from pathlib import Path

    import tomli_w

    from codemix.analysis.confirm import (
        parse_baseline,
        planned_budget,
        planned_data,
        schedules,
        spec_objectives,
        study_raw,
    )
    from codemix.analysis.fit import predict
    from codemix.analysis.fitfile import atomic_write_text, load_fit
    from codemix.analysis.optimum import edge_stages, parse_objective
    from codemix.analysis.sizes import resolve_size
    from codemix.cli._target import fit_warnings
    from codemix.core.errors import CodemixError
    from codemix.optimizer.space import load_study

    fit = load_fit(args.fit)
    if not fit.scaling:
        raise CodemixError(f"{args.fit} has no size law: fit with --size-col on 3+ sizes")
    size = resolve_size(args.size, fit, "--size")
    if size.preset is None:
        raise CodemixError(f"--size {args.size}: name a preset, which the study can train")
    if args.compare < 0:
        raise CodemixError(f"--compare {args.compare}: must be >= 0")
    if args.seeds is not None and args.seeds < 1:
        raise CodemixError(f"--seeds {args.seeds}: must be >= 1")
    if args.workers < 1:
        raise CodemixError(f"--workers {args.workers}: must be >= 1")
    base = load_study(args.study)
    stages = {s["name"]: s for s in base.raw["stages"]}
    first = base.objectives[0]
    text = args.objective or f"{first.direction[:3]}:{first.metric}"
    objective = parse_objective(text, fit.metrics)
    baselines = [parse_baseline(b, stages) for b in args.baseline]
    for b, settings in baselines:  # a baseline must make a valid run, before any is written
        try:
            base.run_spec([f"{k}={json.dumps(v)}" for k, v in settings.items()])
        except CodemixError as e:
            raise CodemixError(f"--baseline {b}: {e}") from None
    out = Path(args.out or Path("runs") / f"{base.name}-confirm-{size.preset}")
    name = f"{base.name}-confirm-{size.preset}"
    # the schedules are chosen and predicted at the tokens the spec will train them for
    data = planned_data(fit, base, size.preset)
    named, rows = schedules(fit, objective, size.count, stages, args.compare, baselines, data)
    seeds = base.seeds if args.seeds is None else args.seeds
    raw = study_raw(base.raw, named, size.preset, name, str(out / "runs"), seeds)
    if args.objective:  # the study reports (and its progress line follows) what is confirmed
        raw["objectives"] = spec_objectives(objective)
    spec_path = out / "confirm.toml"
    each = "one run each" if seeds == 1 else f"{seeds} seeds each"
    header = (
        f"# Confirmation of {args.fit} at {size}: {len(named)} schedules, {each}\n"
        f"# (written by codemix confirm; objective {objective.text})\n"
    )
    text_toml = header + tomli_w.dumps(raw)
    if spec_path.is_file() and spec_path.read_text() != text_toml:
        raise CodemixError(
            f"{spec_path} exists with other schedules or settings (another fit or options); "
            "give another --out, or remove it to start afresh"
        )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(spec_path, text_toml)
    preds, beyond, regime = {}, set(), ""
    if rows:
        import numpy as np

        from codemix.analysis.optimum import outside_ranges
        from codemix.cli._target import regime_warning

        names = list(rows)
        w = np.array([rows[n] for n in names])
        p = predict(fit, w, size.count, data=data)
        preds = {n: {m: v[0][i] for m, v in p.items()} for i, n in enumerate(names)}
        outside = outside_ranges(fit, w)
        beyond = {names[i] for i in outside.rows} if outside is not None else set()
        # said before any run is trained: a ladder matched to these runs may serve better
        regime = regime_warning(fit, w, size.count, data)
    print(f"confirmation of {objective.text} at {size}: {spec_path}")
    budget = planned_budget(fit, base, size.preset)
    if budget is not None:  # what the runs cost, before any is trained: --compare is unbounded
        from codemix.models.presets import format_size

        n_ne, tokens, flops = budget
        runs = len(named) * seeds
        print(
            f"  {len(named)} schedules x {seeds} seed{'s' if seeds > 1 else ''} = {runs} runs "
            f"of {format_size(n_ne)} non-embedding parameters, {format_size(tokens)} tokens each: "
            f"{runs * flops:.2g} FLOPs in all at 6N + 12LdT a token (less where runs share a "
            "stage trunk)"
        )
    for n, settings in named.items():
        shown = ", ".join(f"{k.removeprefix('stages.')}={v}" for k, v in settings.items())
        guess = ", ".join(f"{m} {v:.4g}" for m, v in preds.get(n, {}).items())
        # its mixture lies beyond the ladder's: the prediction extrapolates in the mixture
        mark = "  (outside the fitted runs' shares: extrapolated)" if n in beyond else ""
        print(f"  {n:12s} {shown}" + (f"   predicted {guess}" if guess else "") + mark)
    edge = edge_stages(fit, rows["optimum"]) if "optimum" in rows else []
    if edge:
        print(
            f"note: the optimum's code share of {', '.join(edge)} sits at the edge of the range "
            "the ladder explored: the confirmation can show whether it beats its neighbours, "
            "not what lies beyond (widen that stage's search range for that)"
        )
    for line in fit_warnings(fit):
        print(f"warning from the fit: {line}")
    if regime:
        print(regime)
    if args.dry_run:
        print("dry run: run `codemix confirm` again without --dry-run to train them")
        return 0
    return _run_and_score(args, fit, spec_path, out, objective)


def _run_and_score(args, fit, spec_path, out, objective) -> int:
    import io
    import json

    import optuna
    import polars as pl

    from codemix.analysis.confirm import KEY, calibration
    from codemix.analysis.fit import predict
    from codemix.analysis.fitfile import atomic_write_text
    from codemix.analysis.tables import mixture_array
    from codemix.cli._target import regime_warning, row_data
    from codemix.core.errors import CodemixError
    from codemix.optimizer.export import rows as export_rows
    from codemix.optimizer.space import load_study
    from codemix.optimizer.storage import open_storage
    from codemix.optimizer.study import run_study

    spec = load_study(spec_path)
    url = args.storage or f"sqlite:///{out / 'confirm.db'}"
    run_study(spec, [], url, None, args.workers, args.quiet)
    study = optuna.load_study(study_name=spec.name, storage=open_storage(url))
    df = pl.DataFrame(export_rows(study), infer_schema_length=None)
    if f"choice.{KEY}" not in df.columns or not fit.size_col or fit.size_col not in df.columns:
        raise CodemixError(f"the confirmation study {spec.name} has no usable runs yet")
    df = df.filter(pl.col("run_status") == "completed")
    buf = io.StringIO()
    df.write_csv(buf)
    atomic_write_text(out / "confirm.csv", buf.getvalue())
    w = mixture_array(df, list(fit.mixture_cols), str(out / "confirm.csv"), fit.groups)
    n = df[fit.size_col].cast(pl.Float64).to_numpy()
    rows = row_data(fit, df, str(out / "confirm.csv"), None)
    p = predict(fit, w, n, 0.9, rows)
    cols = {}
    for m, (mean, lo, hi) in p.items():
        cols |= {f"predicted_{m}": mean, f"predicted_{m}_lo90": lo, f"predicted_{m}_hi90": hi}
    pred = df.with_columns(pl.Series(k, v) for k, v in cols.items())
    buf = io.StringIO()
    pred.write_csv(buf)
    atomic_write_text(out / "confirm_pred.csv", buf.getvalue())
    metrics = [m for m in fit.metrics if m in df.columns]
    maximize = tuple(m for m in metrics if objective.text.startswith("max:" + m))
    cal = calibration(pred, metrics, "optimum", 0.9, maximize)
    atomic_write_text(out / "calibration.json", json.dumps(cal, indent=1) + "\n")
    names = pred[f"choice.{KEY}"].to_list()
    n_sched = len(set(names))
    what = f"{len(pred)} confirmation runs" + (
        f" ({n_sched} schedules, their seeds averaged below)" if n_sched < len(pred) else ""
    )
    print(f"{what}; each predicted at its own size, tokens and epochs:")
    for m in metrics:
        print(_calibration_lines(m, cal[m], names, pred[m].to_numpy(), cols, objective))
    regime = regime_warning(fit, w, n, rows)
    if regime:
        print(regime)
    _write_report(out, fit, pred, cal, objective, spec.name, args.fit, regime)
    return 0


def _summary(m: str, c: dict, objective) -> str:
    """A metric's calibration in one line. In a metric the objective does not weigh, the
    optimum's distance from the best schedule is what it gave up there, not a regret."""
    seeds = c["seeds"] > 1
    aim = " (the objective)" if m in objective.weights else ""
    head = (
        f"{m}{aim}: {c['inside']} of {c['runs']} runs inside the 90 % interval, mean relative "
        f"error {c['mean_relative_error']:.2%}"
        + (f" ({c['mean_relative_error_of_means']:.2%} on seed means)" if seeds else "")
        + f", Spearman {c['spearman']:.2f}"
    )
    if "regret" in c:
        if aim:
            head += f", regret of the optimum {c['regret']:.4g}"
        else:
            head += (
                f", the optimum (chosen for {objective.text}) {c['regret']:.4g} from the best here"
            )
        if "regret_se" in c:
            head += f" (standard error {c['regret_se']:.2g})"
    return head


def _calibration_lines(m: str, c: dict, names: list[str], y, cols: dict, objective) -> str:
    """One metric's calibration: the summary, then each schedule's observed (seed mean and
    range) against predicted with its interval."""
    import numpy as np

    from codemix.analysis.confirm import _by_schedule

    seeds = c["seeds"] > 1
    head = "  " + _summary(m, c, objective)
    lines = [head]
    if seeds:
        lines.append(
            f"    seed spread (range over mean): {c['seed_spread_mean']:.2%} on average, "
            f"{c['seed_spread_max']:.2%} at most"
        )
    seen = _by_schedule(names, y)
    mu, lo, hi = (_by_schedule(names, cols[f"predicted_{m}{s}"]) for s in ("", "_lo90", "_hi90"))
    for name, v in seen.items():
        obs = f"{v.mean():.4g}" + (f" (seeds {v.min():.4g}-{v.max():.4g})" if len(v) > 1 else "")
        a, b = lo[name].mean(), hi[name].mean()
        band = f" [{a:.4g}, {b:.4g}]" if np.isfinite(a) and np.isfinite(b) else " (no interval)"
        lines.append(f"    {name:12s} observed {obs}  predicted {mu[name].mean():.4g}{band}")
    return "\n".join(lines)


def _write_report(
    out, fit, pred, cal: dict, objective, study: str, fit_path: str, regime: str = ""
) -> None:
    """calibration.html: the study report of the confirmation runs, headed by each metric's
    calibration, with observed against predicted for both metrics."""
    from codemix.analysis.report import ReportInput, write_report
    from codemix.cli._target import fit_warnings

    if not {"bpb.text", "bpb.code"} <= set(fit.metrics):
        print(f"wrote {out / 'confirm.csv'}, confirm_pred.csv, calibration.json")
        return
    head = []
    for m, c in cal.items():
        spread = f"; seeds' spread {c['seed_spread_mean']:.2%} on average" if c["seeds"] > 1 else ""
        head.append(_summary(m, c, objective) + spread)
    head += [f"Warning from the fit, {line}." for line in fit_warnings(fit)]
    # 'warning: beyond the ladder's regimes: ...' (the runs went where no proxy did) and
    # 'warning: the law forecasts a loss that rises past the ladder ...', a line each
    head += ["W" + line.removeprefix("w") + "." for line in regime.splitlines()]
    r = ReportInput(pred, title=f"confirmation of {fit_path} ({objective.text}): {study}")
    r.headline, r.headline_title = head, "Calibration"
    write_report(r, out / "calibration.html")
    print(f"wrote {out / 'confirm.csv'}, confirm_pred.csv, calibration.json, calibration.html")
