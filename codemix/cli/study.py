"""`codemix study run` and `codemix study export`."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    study = sub.add_parser("study", help="run or export an Optuna study of proxy mixtures")
    ss = study.add_subparsers(dest="study_command", required=True, metavar="ACTION")
    run = ss.add_parser(
        "run",
        help="run (or resume) a study",
        description="Optuna proposes mixtures and stage schedules; batches of trials train "
        "as populations of proxies at every size of the ladder. Run the same command "
        "again, on this or other machines, to resume or add workers.",
    )
    run.add_argument("spec", metavar="SPEC.toml")
    run.add_argument(
        "--storage",
        metavar="URL",
        help="sqlite:///PATH (default: SPEC.db beside the spec), "
        "postgresql://USER:PASSWORD@HOST/DB, or journal:PATH",
    )
    run.add_argument(
        "--workers", type=int, default=1, help="worker processes on this machine (default: 1)"
    )
    run.add_argument("--n-trials", type=int, help="trials in all (default: [study] n_trials)")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec value, e.g. study.sampler=qmc (repeatable)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(func=_run)

    exp = ss.add_parser("export", help="write the results table (.csv or .parquet)")
    exp.add_argument("spec", nargs="?", metavar="SPEC.toml")
    exp.add_argument("--study", help="study name (instead of a spec)")
    exp.add_argument("--storage", metavar="URL")
    exp.add_argument("-o", "--output", required=True, metavar="FILE")
    exp.set_defaults(func=_export)


def _storage(args, spec) -> str:
    from codemix.optimizer.storage import default_url

    return args.storage or default_url(spec.path)


def _run(args) -> int:
    from codemix.core.errors import CodemixError
    from codemix.optimizer.space import load_study
    from codemix.optimizer.study import run_study

    if args.workers < 1:
        raise CodemixError("--workers must be >= 1")
    if args.n_trials is not None and args.n_trials < 1:
        raise CodemixError("--n-trials must be >= 1")
    spec = load_study(args.spec, args.set)
    keys = {kv.partition("=")[0].strip() for kv in args.set}
    if "study.seed" in keys and "train.seed" not in keys:
        # a second seed asked for as study.seed repeats the models of the first
        print(
            "note: study.seed seeds the sampler only; the models' seeds come from [train] "
            "seed (replicate k: train.seed + k). Another seed of the same runs: --set "
            "train.seed=K",
            file=sys.stderr,
        )
    run_study(spec, args.set, _storage(args, spec), args.n_trials, args.workers, args.quiet)
    return 0


def _export(args) -> int:
    from pathlib import Path

    import optuna

    from codemix.core.errors import CodemixError
    from codemix.optimizer.export import export
    from codemix.optimizer.storage import open_storage, redact

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.spec:
        from codemix.optimizer.space import load_study

        spec = load_study(args.spec)
        name, url = spec.name, _storage(args, spec)
    elif args.study and args.storage:
        name, url = args.study, args.storage
    else:
        raise CodemixError("give SPEC.toml, or --study NAME with --storage URL")
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(url, existing=True))
    except KeyError:
        raise CodemixError(f"no study {name!r} in {redact(url)}") from None
    n = export(study, Path(args.output))
    print(f"wrote {n} rows (one per trial, size and seed) to {args.output}")
    return 0
