"""`codemix train`: one run through every stage of a spec."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train one model through all stages of a spec",
        description="Train one model through every stage of SPEC.toml. Killed and run "
        "again with the same command, it continues from its last checkpoint.",
    )
    p.add_argument("spec", metavar="SPEC.toml")
    p.add_argument("--size", help="model preset (default: the spec's [model] size)")
    p.add_argument(
        "--out",
        required=True,
        metavar="RUN_DIR",
        help="metrics.jsonl, summary.json and checkpoints go here",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec value, e.g. train.lr_peak=1e-3 or "
        "stages.cooldown.mixture.code=0.3 (repeatable)",
    )
    p.add_argument(
        "--max-tokens",
        metavar="N",
        help="scale every stage's budget down to N tokens in total, keeping the "
        "stage proportions (smoke runs)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)


def _train(args) -> int:
    from pathlib import Path

    from codemix.core.errors import CodemixError
    from codemix.core.interrupt import stop_on_signals
    from codemix.core.units import parse_count
    from codemix.proxy_train.run import run_single
    from codemix.proxy_train.sharding import init_distributed

    max_tokens = (
        parse_count(args.max_tokens, "--max-tokens") if args.max_tokens is not None else None
    )
    if max_tokens is not None and max_tokens <= 0:
        raise CodemixError(f"--max-tokens {args.max_tokens}: must be more than 0")
    init_distributed()  # a multi-host job (CODEMIX_DISTRIBUTED=1): before any device is used
    with stop_on_signals():
        summary = run_single(
            Path(args.spec),
            Path(args.out),
            size=args.size,
            overrides=args.set,
            max_tokens=max_tokens,
            progress=not args.quiet,
        )
    final = summary["final"]
    print(
        f"{summary['status']}: {args.out}  ({summary['tokens']:,} tokens, "
        f"{summary['wall_time_s']:.0f} s)"
    )
    if summary["status"] != "completed":
        print(f"reason: {summary['reason']}")
        return 1
    for d, loss in (final["loss"] or {}).items():
        print(f"  {d:>12}: validation loss {loss:.4f}, bits per byte {final['bpb'][d]:.4f}")
    return 0
