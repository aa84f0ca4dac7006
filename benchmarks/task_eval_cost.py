"""What downstream-task scoring adds to a population's wall time, through the real trainer.

A population of 6 proxies per size ("1M", "4M", "8M" by default; 10 tokens per
non-embedding parameter: 8.5M, 40M and 76M tokens a run, 6 x 125M = 750M tokens in all,
about 2e16 FLOPs), 32 x 512 tokens a step, three stages (45 / 45 / 10 % of the tokens),
with the store's rendered tasks ([evals]) scored at the default frequency: every evaluation,
and evaluations at stage ends only (train.eval_every = 0), so three task evaluations a run.
`--eval-every 100 --tasks-every 4` measures a denser schedule. About 4 minutes on one H200.

    python benchmarks/task_eval_cost.py --store STORE [--sizes 1M,4M,8M] [--population 6]

STORE needs rendered tasks (`codemix evals prepare STORE`). Prints a table: wall time, the
time in task scoring, the task evaluations run and their share of the wall time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import jax

from codemix.models.accounting import param_count
from codemix.proxy_train.schedule import LRShape, Schedule, Stage
from codemix.proxy_train.spec import TrainSettings
from codemix.proxy_train.store import TokenStore
from codemix.proxy_train.task_eval import load_tasks
from codemix.proxy_train.train import (
    Member,
    enable_compilation_cache,
    model_config_for,
    train_population,
)


def _schedule(code_frac: float, tpp: float) -> Schedule:
    mix = {"text": 1 - code_frac, "code": code_frac}
    return Schedule(
        (
            Stage(
                "init", mix, tokens_per_param=0.45 * tpp, lr=LRShape("cosine", warmup=0.03, end=0.3)
            ),
            Stage(
                "continual",
                mix,
                tokens_per_param=0.45 * tpp,
                lr=LRShape("constant", start="continue"),
            ),
            Stage(
                "cooldown", mix, tokens_per_param=0.1 * tpp, lr=LRShape("linear", start="continue")
            ),
        )
    )


def run(store, size: str, P: int, eval_every: int, tasks_every: int, tpp: float, tmp: Path):
    T, B = 512, 32
    settings = TrainSettings(seq_len=T, batch_size=B, eval_every=eval_every, eval_tokens=65536)
    cfg = model_config_for({"size": size}, store.vocab_size, T)
    tasks = load_tasks(store, sorted(store.manifest["evals"]), T, B)
    members = [
        Member(f"m{i}", _schedule(i / max(P - 1, 1), tpp), i, tmp / size / f"m{i}")
        for i in range(P)
    ]
    t0 = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # repetition warnings: the budget is what it is
        sums = train_population(
            store,
            cfg,
            settings,
            members,
            tmp / size / "ckpt",
            progress=False,
            tasks=tasks,
            tasks_every=tasks_every,
        )
    wall = time.time() - t0
    t = sums[0]["timing"]
    evals = len([1 for _ in (tmp / size / "m0" / "metrics.jsonl").read_text().splitlines()])
    return {
        "size": size,
        "non_emb": param_count(cfg).non_embedding,
        "tokens": sums[0]["tokens"],
        "wall": wall,
        "task_s": t["task_eval_s"],
        "eval_s": t["eval_s"],
        "compile_s": t["compile_s"],
        "records": evals,
        "requests": tasks.n_requests,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True, type=Path)
    ap.add_argument("--sizes", default="1M,4M,8M")
    ap.add_argument("--population", type=int, default=6)
    ap.add_argument("--eval-every", type=int, default=0, help="train.eval_every (0: stage ends)")
    ap.add_argument("--tasks-every", type=int, default=1, help="[evals] every")
    ap.add_argument("--tokens-per-param", type=float, default=10.0)
    args = ap.parse_args()
    store = TokenStore(args.store)
    enable_compilation_cache()
    print(f"device: {jax.devices()[0].device_kind}; population {args.population}; ", end="")
    print(f"eval_every {args.eval_every}, tasks every {args.tasks_every}")
    head = "| size | non-emb params | tokens/run | wall s | task scoring s | share | evals s |"
    print(head + " compile s |\n|" + "---|" * 8)
    with tempfile.TemporaryDirectory() as d:
        for size in args.sizes.split(","):
            r = run(
                store,
                size,
                args.population,
                args.eval_every,
                args.tasks_every,
                args.tokens_per_param,
                Path(d),
            )
            print(
                f"| {r['size']} | {r['non_emb'] / 1e6:.2f}M | {r['tokens'] / 1e6:.1f}M | "
                f"{r['wall']:.1f} | {r['task_s']:.2f} | {r['task_s'] / r['wall']:.1%} | "
                f"{r['eval_s']:.2f} | {r['compile_s']:.1f} |",
                flush=True,
            )
    print(f"({r['requests']} task requests scored per task evaluation and member)")


if __name__ == "__main__":
    main()
