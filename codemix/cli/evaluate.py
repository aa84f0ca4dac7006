"""`codemix evaluate`: a run's checkpoint on the downstream tasks, at full size.

Likelihood metrics of every task asked (the trainer's task evaluation, on the checkpoint's
params); with --generate also greedy generation: exact match on TriviaQA and NQ-Open,
pass@1 on HumanEval and MBPP (programs run in a bubblewrap sandbox)."""

from __future__ import annotations

import argparse

GENERATIVE = ("triviaqa", "nq_open", "humaneval", "mbpp")
CODE = ("humaneval", "mbpp")
DEFAULT_ITEMS = 1000  # as `codemix evals prepare`
GEN_BATCH = 64
QA_NEW_TOKENS, CODE_NEW_TOKENS = 32, 256


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a run's checkpoint on the downstream tasks (likelihood, generation)",
        description="Score a run's checkpoint on downstream tasks: the likelihood metrics "
        "the trainer reports (bpb, acc, acc_norm, correct_prob, ...), and with --generate "
        "0-shot exact match on triviaqa/nq_open and pass@1 on humaneval/mbpp by greedy "
        "decoding. RUN_DIR is a `codemix train` folder or a study's trial-NNNN/SIZE folder "
        "(its study records the store; --store for older studies). Tasks the store has not "
        "rendered are rendered in memory.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--suite", choices=("paper", "all"), help="a task suite (default: paper)")
    which.add_argument("--tasks", metavar="LIST", help="comma-separated task names")
    p.add_argument(
        "--max-items",
        type=int,
        metavar="N",
        help="items per task at most, in the tasks' hash order (0: all; default: as many as "
        f"the store rendered, else {DEFAULT_ITEMS})",
    )
    p.add_argument("--generate", action="store_true", help="also generate: exact match, pass@1")
    p.add_argument("--step", type=int, metavar="N", help="checkpoint step (default: the latest)")
    p.add_argument(
        "--batch",
        type=int,
        metavar="N",
        help="sequences a forward pass (default: the run's training batch for scoring, "
        f"{GEN_BATCH} prompts for generation)",
    )
    p.add_argument(
        "--store",
        metavar="STORE",
        help="token store (default: the run's own; an older study's trial needs it)",
    )
    p.add_argument("-o", "--out", required=True, metavar="EVAL.json", help="the results")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=_evaluate)


def _check_args(args) -> tuple[list, list[str], dict]:
    """(tasks, generative task names, code-task modules) or a CodemixError, before any work."""
    from pathlib import Path

    from codemix.core.errors import CodemixError
    from codemix.proxy_train.tasks import select

    out = Path(args.out)
    if not out.parent.is_dir():
        raise CodemixError(f"-o {out}: folder {out.parent} does not exist")
    if out.is_dir():
        raise CodemixError(f"-o {out}: is a folder; give a file name")
    for flag, value, low in (("--max-items", args.max_items, 0), ("--batch", args.batch, 1)):
        if value is not None and value < low:
            raise CodemixError(f"{flag} {value}: must be >= {low}")
    if args.step is not None and args.step < 0:
        raise CodemixError(f"--step {args.step}: must be >= 0")
    if args.tasks is not None:
        if args.tasks.strip() in ("paper", "all"):
            raise CodemixError(f"--tasks {args.tasks}: a suite; use --suite {args.tasks.strip()}")
        tasks = select(args.tasks)
    else:
        tasks = select(args.suite or "paper")
    gen = [t.name for t in tasks if t.name in GENERATIVE] if args.generate else []
    if args.generate and not gen:
        raise CodemixError(
            f"--generate: none of the tasks asked has a generative form ({', '.join(GENERATIVE)})"
        )
    modules = {}
    if any(g in CODE for g in gen):
        try:
            from codemix.evaluation import code_tasks, sandbox
        except ImportError as e:
            raise CodemixError(f"--generate: the code tasks cannot run here ({e})") from None
        reason = sandbox.available()
        if reason is not None:
            raise CodemixError(f"--generate: generated programs cannot be run here: {reason}")
        modules = {"code_tasks": code_tasks, "sandbox": sandbox}
    return tasks, gen, modules


def _evaluate(args) -> int:
    import json
    import time
    from pathlib import Path

    from codemix.core.files import atomic_write_text

    tasks, gen, modules = _check_args(args)
    t0 = time.perf_counter()
    from codemix.evaluation.checkpoint import load_run
    from codemix.proxy_train.train import enable_compilation_cache

    enable_compilation_cache()
    run = load_run(Path(args.run_dir), args.step, Path(args.store) if args.store else None)
    wall = {"load": time.perf_counter() - t0}
    print(
        f"evaluating {run.path} ({run.kind} member {run.member}, step {run.step}, "
        f"{run.cfg.n_layers}L{run.cfg.d_model}d, vocab {run.cfg.vocab_size})"
    )
    items = {t.name: _max_items(run.store, t.name, args.max_items) for t in tasks}
    t1 = time.perf_counter()
    per_task, families, sources = _likelihood(run, tasks, items, args.batch or run.batch_size)
    wall["likelihood"] = time.perf_counter() - t1
    result = {
        "run_dir": str(run.path.absolute()),
        "kind": run.kind,
        "member": run.member,
        "step": run.step,
        "checkpoint": str(run.checkpoint.absolute()),
        "store": str(run.store.path.absolute()),
        "model": {k: getattr(run.cfg, k) for k in ("n_layers", "d_model", "n_heads", "d_ff")}
        | {"vocab_size": run.cfg.vocab_size, "seq_len": run.cfg.seq_len},
        "tasks": [t.name for t in tasks],
        "max_items": items,
        "task_source": sources,
        "metrics": per_task,
        "families": families,
    }
    if gen:
        stats: dict = {}
        batch = args.batch or GEN_BATCH
        result["generation"] = _generation(run, gen, items, batch, modules, stats, args.quiet)
        wall["generation"] = stats.get("seconds", 0.0)
        wall["execution"] = stats.get("execution_s", 0.0)
        result["generated_tokens"] = stats.get("tokens", 0)
        result["generated_tokens_per_s"] = stats.get("tokens", 0) / max(stats["seconds"], 1e-9)
    wall["total"] = time.perf_counter() - t0
    result["wall_s"] = wall
    out = Path(args.out)
    replaced = out.exists()
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    _print(result)
    print(f"{'replaced' if replaced else 'wrote'} {out} ({wall['total']:.0f} s)")
    return 0


def _max_items(store, name: str, given: int | None) -> int | None:
    """Items to score of a task: --max-items (0: all), else what the store rendered."""
    if given is not None:
        return given or None
    info = store.manifest.get("evals", {}).get(name)
    return info.get("max_items") if info else DEFAULT_ITEMS


def _likelihood(run, tasks: list, items: dict, batch: int) -> tuple[dict, dict, dict]:
    """Per-task metrics, family means, and where each task's requests came from."""
    import jax
    import jax.numpy as jnp

    from codemix.proxy_train.task_eval import make_scorer, metrics, score, task_set
    from codemix.proxy_train.tasks import TASKS

    arrays, sources = {}, {}
    for t in tasks:
        arrays[t.name], sources[t.name] = _requests(run, t, items[t.name])
    rendered = [n for n, s in sources.items() if s != "store"]
    if rendered:
        print(f"the store has no fitting rendering of {', '.join(rendered)}: rendered in memory")
    info = {
        n: {"family": TASKS[n].family, "chance": _chance(a, TASKS[n])} for n, a in arrays.items()
    }
    ts = task_set(arrays, info, run.cfg.seq_len, batch)
    n_req = sum(len(r[2]) for r in ts.rows)
    tasks_word = "task" if len(ts.tasks) == 1 else "tasks"
    print(f"scoring {ts.n_requests:,} requests of {len(ts.tasks)} {tasks_word} ({n_req:,} rows)")
    params = jax.tree.map(lambda x: jnp.asarray(x)[None], run.params)
    nll = score(make_scorer(run.cfg, batch), params, ts)[0]
    res = metrics(ts, nll)
    per_task = {k: v for k, v in res.items() if k in TASKS}
    return per_task, {k: v for k, v in res.items() if k not in TASKS}, sources


def _chance(a: dict, task) -> float:
    from codemix.proxy_train.tasks import chance

    return chance(a, task.reader)


def _requests(run, task, n: int | None) -> tuple[dict, str]:
    """The task's rendered requests (first n items): the store's when it has them."""
    import numpy as np

    from codemix.proxy_train.tasks import render

    info = run.store.manifest.get("evals", {}).get(task.name)
    file = run.store.path / "evals" / f"{task.name}.npz"
    fits = info is not None and file.is_file()
    fits = fits and info.get("tokenizer") == run.store.manifest["tokenizer"]["hash"]
    fits = fits and (info.get("max_items") is None or (n is not None and n <= info["max_items"]))
    if fits:
        with np.load(file) as z:
            return _first_items({k: z[k] for k in z.files}, n), "store"
    return render(task, run.tokenizer, n), "rendered in memory"


def _first_items(a: dict, n: int | None) -> dict:
    """The rendered arrays of the first n items (items come in hash order)."""
    import numpy as np

    if n is None or n >= len(a["gold"]):
        return a
    r = int(np.searchsorted(a["item"], n))  # requests of items before n
    ntok = int((a["ctx_len"][:r] + a["cont_len"][:r]).sum())
    nbytes = int(a["cont_len"][:r].sum())
    per_request = ("ctx_len", "cont_len", "cont_chars", "item")
    return (
        {k: a[k][:r] for k in per_request}
        | {k: a[k][:n] for k in ("gold", "n_choices")}
        | {"tokens": a["tokens"][:ntok], "cont_bytes_cum": a["cont_bytes_cum"][:nbytes]}
    )


def _generation(run, names: list[str], items: dict, batch: int, mods, stats, quiet) -> dict:
    """Exact match or pass@1 of every generative task, with a few examples each."""
    import time

    from codemix.evaluation import answers
    from codemix.evaluation.generate import generate_text

    out = {}
    for name in names:
        mine: dict = {}  # this task's generation stats
        if name in answers.QA_TASKS:
            qa = answers.qa_items(name, items[name])
            new = min(QA_NEW_TOKENS, run.cfg.seq_len // 2)
            texts = generate_text(
                run,
                [q.prompt for q in qa],
                new,
                ("\n",),
                batch_size=batch,
                progress=not quiet,
                desc=f"generating {name}",
                stats=mine,
            )
            out[name] = answers.score(qa, texts) | _settings(new, mine, stats)
            out[name]["examples"] = [
                {"id": q.id, "generation": g, "correct": answers.exact_match(g, q.answers)}
                for q, g in list(zip(qa, texts, strict=True))[:3]
            ]
            continue
        ct, sandbox = mods["code_tasks"], mods["sandbox"]
        problems = getattr(ct, f"{name}_problems")(items[name])
        new = min(CODE_NEW_TOKENS, run.cfg.seq_len // 2)
        texts = generate_text(
            run,
            [p["prompt"] for p in problems],
            new,
            tuple(ct.stop_sequences(name)),
            batch_size=batch,
            progress=not quiet,
            desc=f"generating {name}",
            stats=mine,
        )
        assemble = getattr(ct, f"{name}_program")
        t0 = time.perf_counter()
        outcomes = sandbox.run_many([assemble(p, c) for p, c in zip(problems, texts, strict=True)])
        stats["execution_s"] = stats.get("execution_s", 0.0) + time.perf_counter() - t0
        status = [o.status for o in outcomes]
        examples = list(zip(problems, texts, outcomes, strict=True))[:3]
        out[name] = {
            "pass@1": status.count("passed") / len(status) if status else None,
            "items": len(status),
            "status": {s: status.count(s) for s in sorted(set(status))},
        } | _settings(new, mine, stats)
        out[name]["examples"] = [
            {"task_id": p["task_id"], "completion": c, "status": o.status} for p, c, o in examples
        ]
    return out


def _settings(new: int, mine: dict, total: dict) -> dict:
    """A task's generation settings and counts; its stats added to the run's."""
    for k, v in mine.items():
        total[k] = total.get(k, 0) + v
    return {
        "max_new_tokens": new,
        "generated_tokens": mine.get("tokens", 0),
        "truncated_prompts": mine.get("truncated_prompts", 0),
    }


def _print(result: dict) -> None:
    gen = result.get("generation", {})
    rows = [("task", "items", "bpb", "acc", "acc_norm", "generation")]
    for name, m in result["metrics"].items():
        g = gen.get(name, {})
        shown = (
            f"pass@1 {g['pass@1']:.3f}"
            if "pass@1" in g
            else f"exact match {g['exact_match']:.3f}"
            if g.get("exact_match") is not None
            else ""
        )
        rows.append((name, str(m["items"]), _f(m["bpb"]), _f(m["acc"]), _f(m["acc_norm"]), shown))
    for fam, m in result["families"].items():
        rows.append(
            (f"[{fam}]", str(m["items"]), _f(m["bpb"]), _f(m["acc"]), _f(m["acc_norm"]), "")
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    if gen:
        print(
            f"generated {result['generated_tokens']:,} tokens at "
            f"{result['generated_tokens_per_s']:,.0f} tokens/s"
        )


def _f(x) -> str:
    return "-" if x is None else f"{x:.4f}"
