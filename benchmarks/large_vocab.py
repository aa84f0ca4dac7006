"""Large vocabularies: the trainer's step with the loss in chunks against whole logits.

Budget: the trainer's own step program (`make_programs`: forward, loss, backward, AdamW)
on random tokens, no sampler or checkpoints: 124M at 128 x 1024 tokens a step with
vocabularies of 8,192 and 50,304 (GPT-2's), whole logits and chunks, 470M at 32 x 1024
with 256,000 (Cohere's), and populations of "1M" and "4M" proxies (8-32 members of 32-128
x 1024 tokens) with 8,192 and 50,304; 10 timed steps after 2 of warm-up each. About 6e15
FLOPs in all; each case costs 15-40 s on one H200, mostly compiling, so run each in a
fresh process (`--only K`) to keep one case's memory from the next. A configuration that
does not fit says so and the table goes on. `--trace DIR` saves a profiler trace of the
timed steps, for `benchmarks/step_profile.py --trace`. `--impl pallas` takes the chunked
cases' loss in the Pallas kernels of `models/fused_loss.py`; `--loss-only` times the loss
and its gradients alone (a population of 16 "1M" heads, d = 128, 32 x 1024 tokens each),
for each implementation and tiling named by `--tiles BN,BV,warps,stages ...`.

    python benchmarks/large_vocab.py [--steps 10] [--only K ...] [--trace DIR] [--impl pallas]
    python benchmarks/large_vocab.py --loss-only [--tiles 64,128,4,2[,k|m[,S]] ...]

Without `--tiles` the kernels run with the tiles `models/fused_loss.py` ships.
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext

import jax
import jax.numpy as jnp
import numpy as np

from codemix.models import fused_loss
from codemix.models.accounting import flops_per_token, param_count
from codemix.models.transformer import chunked_mean_loss
from codemix.proxy_train import sharding as shd
from codemix.proxy_train.spec import TrainSettings
from codemix.proxy_train.train import make_programs, model_config_for

PEAK = 989e12  # dense bf16 FLOP/s of an H100 or H200
CASES = [  # preset, vocab, batch, loss_chunk (0: whole logits), population
    ("124M", 8192, 128, 0, 1),
    ("124M", 50304, 128, 0, 1),
    ("124M", 50304, 128, 128, 1),
    ("124M", 50304, 128, 512, 1),
    ("470M", 256000, 32, 0, 1),
    ("470M", 256000, 32, 128, 1),
    # proxies, trained as populations
    ("1M", 8192, 32, 0, 16),
    ("1M", 8192, 64, 0, 16),
    ("1M", 8192, 32, 0, 32),
    ("1M", 8192, 32, 256, 16),
    ("1M", 50304, 32, 128, 16),
    ("4M", 8192, 32, 0, 16),
    ("4M", 50304, 32, 128, 16),
    ("1M", 8192, 128, 0, 8),
    ("1M", 8192, 64, 256, 16),
    ("124M", 8192, 128, 256, 1),
    ("4M", 8192, 32, 256, 16),
    ("1M", 8192, 32, 128, 16),
    ("1M", 8192, 32, 1024, 16),
    ("124M", 50304, 128, 256, 1),
]


def run(
    size: str,
    vocab: int,
    B: int,
    chunk: int,
    steps: int,
    P: int = 1,
    T: int = 1024,
    trace=None,
    impl: str = "xla",
) -> dict:
    cfg = model_config_for({"size": size, "loss_chunk": chunk, "loss_impl": impl}, vocab, T)
    settings = TrainSettings(seq_len=T, batch_size=B, checkpoints=False)
    progs = make_programs(cfg, settings, P, 2, shd.make_mesh(P))
    state = progs.init(jnp.arange(P, dtype=jnp.uint32))
    rng = np.random.default_rng(0)
    lr = jnp.full((P,), 1e-4, jnp.float32)
    batches = [jnp.asarray(rng.integers(0, vocab, (P, B, T + 1), dtype=np.int32)) for _ in range(2)]
    t0 = time.perf_counter()
    for i in range(2):
        state, loss = progs.step(state, batches[i % 2], lr)
    jax.block_until_ready(loss)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with jax.profiler.trace(trace, create_perfetto_trace=True) if trace else nullcontext():
        for i in range(steps):
            state, loss = progs.step(state, batches[i % 2], lr)
        jax.block_until_ready(loss)
    dt = (time.perf_counter() - t0) / steps
    stats = jax.local_devices()[0].memory_stats() or {}
    tokens_s = P * B * T / dt
    return {
        "params": param_count(cfg).total,
        "tokens_s": tokens_s,
        "mfu": tokens_s * flops_per_token(cfg, T) / PEAK,
        "peak_gb": stats.get("peak_bytes_in_use", 0) / 2**30,
        "compile_s": compile_s,
        "loss": float(np.asarray(loss).ravel()[0]),
    }


def set_tiles(tile: str) -> None:
    """BN,BV,warps,stages[,k|m[,S]]: the kernels' tiles, dw from a kernel (k) or a matmul
    (m), and S row splits of the dw kernel."""
    bn, bv, warps, stages, *dw = tile.split(",")
    fused_loss.SPLIT = int(dw[1]) if len(dw) > 1 else fused_loss.SPLIT
    dw = dw[:1]
    fused_loss.BN, fused_loss.BV = int(bn), int(bv)
    fused_loss.NUM_WARPS, fused_loss.NUM_STAGES = int(warps), int(stages)
    fused_loss.DW_KERNEL = dw != ["m"]


def loss_only(tiles: list[str], steps: int, P=16, B=32, T=1024, D=128, V=8192) -> None:
    """The loss and its gradients alone, per implementation: ms a call, the rate of its
    three logits-sized matmuls, and the largest difference from the XLA path. P = 1 is one
    model (no population axis)."""
    k = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(k[0], (P, B, T, D), jnp.bfloat16)
    w = (0.05 * jax.random.normal(k[1], (P, D, V))).astype(jnp.bfloat16)
    y = jax.random.randint(k[2], (P, B, T), 0, V)
    if P == 1:
        x, w, y = x[0], w[0], y[0]
    matmul = 2 * P * B * T * D * V  # FLOPs of one logits-sized matmul
    impls = [("xla chunks of 256", None)] + [(f"pallas {t}", t) for t in tiles]
    print(f"loss alone: {P} x {B} x {T} rows, D = {D}, V = {V}")
    print(f"{'implementation':>28} {'ms':>8} {'TFLOP/s (3 matmuls)':>20} {'max rel. error':>14}")
    ref = None
    for name, tile in impls:
        if tile is not None:
            set_tiles(tile)

        def f(x, w, y, fused=tile is not None):
            if fused:
                return fused_loss.fused_mean_loss(x, w, y, "bfloat16", fused_loss.INTERPRET)
            return chunked_mean_loss(x, w, y, 256, "bfloat16")

        g = jax.value_and_grad(f, argnums=(0, 1))
        g = jax.jit(g if P == 1 else jax.vmap(g))
        try:
            out = jax.block_until_ready(g(x, w, y))
            ref = ref or out  # against the XLA path: loss, dx, dw
            flat = zip(jax.tree.leaves(out), jax.tree.leaves(ref), strict=True)
            err = max(float(jnp.abs(a - b).max() / jnp.abs(b).max()) for a, b in flat)
            t0 = time.perf_counter()
            for _ in range(steps):
                out = g(x, w, y)
            jax.block_until_ready(out)
        except Exception as e:
            print(f"{name:>28} failed: {str(e)[:300]}", flush=True)
            continue
        ms = (time.perf_counter() - t0) / steps * 1e3
        print(f"{name:>28} {ms:8.2f} {3 * matmul / ms / 1e9:20.0f} {err:14.1e}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--only", type=int, nargs="*", help="case numbers (from 0)")
    ap.add_argument("--chunk", type=int, help="loss_chunk for the chunked cases instead of 128")
    ap.add_argument("--trace", help="folder for a profiler trace of the timed steps")
    ap.add_argument("--impl", default="xla", choices=["xla", "pallas"], help="loss_impl")
    ap.add_argument("--loss-only", action="store_true", help="time the loss alone")
    ap.add_argument("--members", type=int, default=16, help="--loss-only: population size")
    ap.add_argument("--tiles", nargs="*", help="BN,BV,warps,stages[,k|m[,S]] (default: shipped)")
    args = ap.parse_args()
    shipped = (
        f"{fused_loss.BN},{fused_loss.BV},{fused_loss.NUM_WARPS},{fused_loss.NUM_STAGES},"
        f"{'k' if fused_loss.DW_KERNEL else 'm'},{fused_loss.SPLIT}"
    )
    tiles = args.tiles or [shipped]
    if args.loss_only:
        return loss_only(tiles, args.steps, P=args.members)
    set_tiles(tiles[0])
    print(f"device: {jax.devices()[0].device_kind}; 6N + 12LdT FLOPs a token against 989 TFLOP/s")
    print(
        f"{'preset':>6} {'vocab':>7} {'P x B x T':>11} {'chunk':>5} {'tokens/s':>10} {'MFU':>6} "
        f"{'peak GiB':>8} {'compile s':>9} {'loss':>6}  (loss_impl {args.impl})"
    )
    for k, (size, vocab, B, chunk, P) in enumerate(CASES):
        if args.only and k not in args.only:
            continue
        chunk = args.chunk if chunk and args.chunk else chunk
        head = f"{size:>6} {vocab:>7} {f'{P}x{B}x1024':>11} {chunk or 'all':>5}"
        try:
            r = run(size, vocab, B, chunk, args.steps, P, trace=args.trace, impl=args.impl)
        except Exception as e:  # XLA reports running out of memory as a runtime error
            why = (
                "out of memory"
                if "RESOURCE_EXHAUSTED" in str(e) or "memory" in str(e)
                else str(e)[:80]
            )
            print(f"{head} {why}", flush=True)
            continue
        finally:
            jax.clear_caches()
        print(
            f"{head} {r['tokens_s']:10.0f} {r['mfu']:6.1%} {r['peak_gb']:8.1f} "
            f"{r['compile_s']:9.1f} {r['loss']:6.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
