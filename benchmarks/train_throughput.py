"""Trainer throughput: tokens/s and MFU (6N + 12*L*d*T FLOPs per token against the chip's
dense bf16 peak, 989 TFLOP/s for H100/H200), through the real trainer (`train_population`).

Suites and their budgets:
  large    124M (32, 64 and 128 x 1024 tokens a step), 470M (32 and 64 x 1024) and 2.8B
           (8 x 1024, full remat) for 12-30 steps each (about 2e16 FLOPs in all), no
           checkpoints. About 4 minutes on one H100/H200, mostly compilation.
  variants 124M and 470M with one step-level option changed at a time (population axis,
           scan unrolling); run it again under XLA_FLAGS to try compiler flags. ~3 minutes.
  tuning   124M and 470M: batch size, no remat, bfloat16 logits, and (with --wide-store) a
           vocabulary of 50,304 as GPT-2's. ~5 minutes on one H100, mostly compilation.
  proxies  64 proxies of the "1M" preset (vocab 8192, 32 x 512 tokens a step), 20M tokens
           each (1.28B in all, ~2.3e16 FLOPs) through three stages with evaluation every 200
           steps and checkpoints at stage ends, in populations sized to the GPU's memory;
           against training them one at a time (64 x 20M tokens at one proxy's own step
           rate) and against the compute bound (their FLOPs at the chip's peak), with the
           populations' MFU; `--loss-impl xla|pallas|auto` picks the models' loss. About
           3-5 minutes on one H100 or H200.
  widths   step time against population width: "1M" at 16 x 256 and "4M" at 32 x 1024
           tokens a step (a branched study's ladder batches), 1-24 members, through the
           trainer (60 steps) and as the bare step program on random tokens (host work
           left out); prints the wall-time ratio a 3 x 8 branched study can reach at each
           size. About 4e15 FLOPs; 3-4 minutes on one H200, mostly compilation.
  cpu      the smallest presets on this machine's CPU (16 x 256 tokens a step, fp32), 30
           steps each: about 2 minutes on 2 cores.

    python benchmarks/train_throughput.py --store STORE --suite SUITE [--loss-impl X]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import jax

from codemix.models.accounting import flops_per_token
from codemix.proxy_train import train as train_mod
from codemix.proxy_train.schedule import LRShape, Schedule, Stage
from codemix.proxy_train.spec import TrainSettings
from codemix.proxy_train.store import TokenStore
from codemix.proxy_train.train import (
    Member,
    enable_compilation_cache,
    model_config_for,
    peak_flops,
    population_size,
    train_population,
)

MIX = {"text": 0.75, "code": 0.25}


def _one_stage(tokens: int) -> Schedule:
    return Schedule((Stage("run", MIX, tokens=tokens, lr=LRShape("cosine", warmup=0.1)),))


def _three_stages(tokens: int) -> Schedule:
    return Schedule(
        (
            Stage(
                "init",
                {"text": 0.5, "code": 0.5},
                tokens=int(tokens * 0.45),
                lr=LRShape("cosine", warmup=0.02, end=0.3),
            ),
            Stage(
                "continual",
                {"text": 0.9, "code": 0.1},
                tokens=int(tokens * 0.45),
                lr=LRShape("constant", start="continue"),
            ),
            Stage(
                "cooldown",
                {"text": 0.8, "code": 0.2},
                tokens=tokens - 2 * int(tokens * 0.45),
                lr=LRShape("linear", start="continue", end_lr=1e-6),
            ),
        )
    )


def run(store, size, B, T, steps, tmp, P=1, model=None, schedule=None, squeeze=True, **settings):
    s = TrainSettings(
        seq_len=T,
        batch_size=B,
        checkpoints=settings.pop("checkpoints", False),
        eval_tokens=settings.pop("eval_tokens", T),
        **settings,
    )
    cfg = model_config_for({"size": size, **(model or {})}, store.vocab_size, T)
    schedule = schedule or _one_stage(steps * B * T)
    members = [Member(f"m{i}", schedule, i, tmp / f"m{i}") for i in range(P)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # repeats of the small corpus are fine here
        sums = train_population(
            store, cfg, s, members, tmp / "ckpt", progress=False, squeeze_single=squeeze
        )
    return cfg, sums


def large(store, tmp, only=None):
    rows = []
    configs = [
        ("124M", 32, 1024, 30, {}),
        ("124M", 64, 1024, 30, {}),
        ("124M", 128, 1024, 20, {}),
        ("470M", 32, 1024, 20, {}),
        ("470M", 64, 1024, 16, {}),
        ("2.8B", 8, 1024, 12, {"remat": "full"}),
    ]
    for i, (size, B, T, steps, model) in enumerate(configs):
        if only and size not in only:
            continue
        try:
            cfg, (s,) = run(store, size, B, T, steps, tmp / f"l{i}", model=model)
        except Exception as e:  # an out-of-memory configuration is a result, not a crash
            rows.append((size, B, T, model, None, None, None, f"{type(e).__name__}: {e}"[:80]))
            continue
        t = s["timing"]
        rows.append((size, B, T, model, t["step_tokens_per_s"], t["step_mfu"], t["compile_s"], ""))
    print(
        f"\n{'preset':>6} {'batch':>9} {'options':>24} {'tokens/s':>10} {'MFU':>6} {'compile s':>9}"
    )
    for size, B, T, model, tps, mfu, comp, err in rows:
        opt = ",".join(f"{k}={v}" for k, v in model.items()) or "-"
        if tps is None:
            print(f"{size:>6} {B:>4}x{T:<4} {opt:>24}   failed: {err}")
        else:
            print(
                f"{size:>6} {B:>4}x{T:<4} {opt:>24} {tps:>10,.0f} {(mfu or 0):>6.1%} {comp:>9.1f}"
            )


def variants(store, tmp, only=None, only_new=False):
    """What each step-level option buys, one at a time, at 124M and 470M."""

    rows = []
    for size, B in (("124M", 64), ("124M", 32), ("470M", 16)):
        if only and size not in only:
            continue
        for name, squeeze, model in [
            ("vmapped (P=1 axis kept)", False, {"remat": "dots_saveable", "scan_unroll": 1}),
            ("no population axis", True, {"remat": "dots_saveable", "scan_unroll": 1}),
            ("+ scan unroll 2", True, {"remat": "dots_saveable", "scan_unroll": 2}),
            ("+ scan fully unrolled", True, {"remat": "dots_saveable", "scan_unroll": 99}),
            ("unrolled, no remat", True, {"remat": "none", "scan_unroll": 99}),
        ]:
            if only_new and "no remat" not in name:
                continue
            _, (s,) = run(
                store, size, B, 1024, 30, tmp / f"v{len(rows)}", model=model, squeeze=squeeze
            )
            t = s["timing"]
            rows.append((size, B, name, t["step_tokens_per_s"], t["step_mfu"], t["compile_s"]))
    print(
        f"\n{'preset':>6} {'batch':>9} {'variant':>26} {'tokens/s':>10} {'MFU':>6} {'compile s':>9}"
    )
    for size, B, name, tps, mfu, comp in rows:
        print(f"{size:>6} {B:>4}x1024 {name:>26} {tps:>10,.0f} {(mfu or 0):>6.1%} {comp:>9.1f}")


def tuning(stores, tmp, only=None):
    """One change at a time against the earlier default (float32 logits): bfloat16 logits,
    batch size, a d_ff rounded to 256, and (with a second store) GPT-2's vocabulary, which
    the 124M name and the issue's reference figures assume."""
    old = {"remat": "none", "logits_dtype": "float32"}
    new = {"remat": "none"}
    configs = [  # preset, batch, model options, store
        ("124M", 64, old, 0),
        ("124M", 64, new, 0),
        ("124M", 128, new, 0),
        ("470M", 64, old, 0),
        ("470M", 64, new, 0),
        ("470M", 64, new | {"d_ff": 2816}, 0),
        ("124M", 64, old, 1),
        ("124M", 64, new, 1),
    ]
    print(f"\n{'preset':>6} {'vocab':>6} {'batch':>9} {'options':>36} {'tokens/s':>10} {'MFU':>6}")
    for i, (size, B, model, k) in enumerate(configs):
        if (only and size not in only) or k >= len(stores):
            continue
        opt = ",".join(f"{a}={b}" for a, b in model.items())
        head = f"{size:>6} {stores[k].vocab_size:>6} {B:>4}x1024 {opt:>36}"
        try:
            _, (s,) = run(stores[k], size, B, 1024, 16, tmp / f"t{i}", model=model)
        except Exception as e:  # an out-of-memory configuration is a result, not a crash
            print(f"{head}   failed: {type(e).__name__}: {str(e)[:60]}", flush=True)
            continue
        t = s["timing"]
        print(f"{head} {t['step_tokens_per_s']:>10,.0f} {(t['step_mfu'] or 0):>6.1%}", flush=True)


def proxies(store, tmp, n=64, tokens=20_000_000, B=32, T=512, loss_impl="auto"):
    model = {"loss_impl": loss_impl}
    _, (alone,) = run(store, "1M", B, T, 400, tmp / "alone", model=model)
    rate = alone["timing"]["step_tokens_per_s"]
    one_at_a_time = n * tokens / rate
    cfg = model_config_for({"size": "1M", **model}, store.vocab_size, T)
    fpt, peak = flops_per_token(cfg, T), peak_flops()
    bound = n * tokens * fpt / peak if peak else float("nan")
    per_pop = population_size(cfg, B, n)
    t0 = time.time()
    done, timings = 0, []
    while done < n:
        P = min(per_pop, n - done)
        _, sums = run(
            store,
            "1M",
            B,
            T,
            0,
            tmp / f"pop{done}",
            P=P,
            model=model,
            schedule=_three_stages(tokens),
            checkpoints=True,
            eval_every=200,
            eval_tokens=16384,
        )
        timings.append(sums[0]["timing"] | {"P": P, "wall": sums[0]["wall_time_s"]})
        done += P
    wall = time.time() - t0
    print(f"\none proxy alone: {rate:,.0f} tokens/s (steady state, {alone['params']:,} parameters)")
    print(
        f"{'population':>10} {'wall s':>8} {'compile s':>9} {'eval s':>7} {'ckpt s':>7} "
        f"{'step tokens/s':>14} {'MFU':>6}"
    )
    for t in timings:
        mfu = t["step_tokens_per_s"] * fpt / peak if peak else float("nan")
        print(
            f"{t['P']:>10} {t['wall']:>8.1f} {t['compile_s']:>9.1f} {t['eval_s']:>7.1f} "
            f"{t['checkpoint_s']:>7.1f} {t['step_tokens_per_s']:>14,.0f} {mfu:>6.1%}"
        )
    print(
        f"\n{n} proxies x {tokens / 1e6:.0f}M tokens: {wall:.0f} s end to end, "
        f"{n * tokens * fpt / wall / (peak or float('nan')):.1%} MFU; one at a time (at one "
        f"proxy's rate) {one_at_a_time:.0f} s, {wall / one_at_a_time:.2f}x; compute bound "
        f"(at {peak / 1e12 if peak else float('nan'):.0f} TFLOP/s) {bound:.0f} s, "
        f"{wall / bound:.1f}x"
    )


def bare_step_ms(cfg, B, T, P, steps=30) -> float:
    """ms a step of the step program alone: random tokens, dispatched back to back."""
    import jax.numpy as jnp
    import numpy as np

    from codemix.proxy_train import sharding as shd
    from codemix.proxy_train.train import make_programs

    progs = make_programs(cfg, TrainSettings(seq_len=T, batch_size=B), P, 2, shd.make_mesh(P))
    state = progs.init(jnp.arange(P, dtype=jnp.uint32))
    rng = np.random.default_rng(0)
    toks = [jnp.asarray(rng.integers(0, cfg.vocab_size, (P, B, T + 1), np.int32)) for _ in "ab"]
    lr = jnp.full((P,), 1e-4, jnp.float32)
    for i in range(3):
        state, loss = progs.step(state, toks[i % 2], lr)
    jax.block_until_ready(loss)
    t0 = time.perf_counter()
    for i in range(steps):
        state, loss = progs.step(state, toks[i % 2], lr)
    jax.block_until_ready(loss)
    return (time.perf_counter() - t0) / steps * 1e3


def widths(
    store, tmp, widths=(1, 3, 6, 12, 24), steps=60, configs=(("1M", 16, 256), ("4M", 32, 1024))
):
    """Per-step time against population width. A branched 3 x 8 study trains its 3 trunks
    (80 % of the steps) as a population of 3 and its 24 cooldowns as one of 24, against 24
    runs from scratch as one population: wall ratio (0.8 t(3) + 0.2 t(24)) / t(24) at best,
    since each branch must wait for its trunk; FLOPs ratio 0.30."""
    print(
        f"\n{'preset':>6} {'batch':>8} {'P':>3} {'trainer ms':>10} {'(1 a call)':>10} "
        f"{'bare ms':>8} {'ms/member':>9} {'step MFU':>8}"
    )
    for size, B, T in configs:
        t = {}
        for P in widths:
            train_mod.PREFETCH_BLOCK = 1  # batches drawn one step a call, as before
            _, sums = run(store, size, B, T, steps, tmp / f"w{size}-{P}-1", P=P)
            single = P * B * T / sums[0]["timing"]["step_tokens_per_s"] * 1e3
            train_mod.PREFETCH_BLOCK = 32
            cfg, sums = run(store, size, B, T, steps, tmp / f"w{size}-{P}", P=P)
            tps = sums[0]["timing"]["step_tokens_per_s"]
            t[P] = P * B * T / tps * 1e3
            bare = bare_step_ms(cfg, B, T, P)
            mfu = sums[0]["timing"]["step_mfu"] or float("nan")
            print(
                f"{size:>6} {f'{B}x{T}':>8} {P:>3} {t[P]:>10.2f} {single:>10.2f} {bare:>8.2f} "
                f"{t[P] / P:>9.2f} {mfu:>8.1%}",
                flush=True,
            )
            jax.clear_caches()
        if 3 in t and 24 in t:
            best = (0.8 * t[3] + 0.2 * t[24]) / t[24]
            print(f"{size}: t(3)/t(24) = {t[3] / t[24]:.2f}; best branched wall ratio {best:.2f}")


def cpu(store, tmp):
    print(f"\n{'preset':>6} {'params':>8} {'batch':>8} {'tokens/s':>9} {'compile s':>9}")
    for size in ("test", "0.5M", "1M", "2M"):
        cfg, (s,) = run(store, size, 16, 256, 30, tmp / size)
        print(
            f"{size:>6} {s['params']:>8,} {'16x256':>8} "
            f"{s['timing']['step_tokens_per_s']:>9,.0f} {s['timing']['compile_s']:>9.1f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", required=True)
    ap.add_argument("--wide-store", help="tuning: a second store with a GPT-2-sized vocabulary")
    ap.add_argument(
        "--suite",
        choices=["large", "variants", "tuning", "proxies", "widths", "cpu"],
        required=True,
    )
    ap.add_argument("--only", nargs="*", help="large suite: only these presets")
    ap.add_argument("--only-new", action="store_true", help="variants: only the last one")
    ap.add_argument(
        "--loss-impl", default="auto", choices=["auto", "xla", "pallas"], help="proxies: loss_impl"
    )
    args = ap.parse_args()
    enable_compilation_cache()
    store = TokenStore(args.store)
    dev = jax.devices()[0]
    print(
        f"device: {dev.device_kind} x {jax.device_count()} ({jax.default_backend()}), "
        f"jax {jax.__version__}; store vocab {store.vocab_size}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        if args.suite == "tuning":
            wide = [TokenStore(args.wide_store)] if args.wide_store else []
            tuning([store, *wide], Path(tmp), args.only)
        elif args.suite in ("large", "variants"):
            if args.suite == "large":
                large(store, Path(tmp), args.only)
            else:
                variants(store, Path(tmp), args.only, args.only_new)
        else:
            if args.suite == "proxies":
                proxies(store, Path(tmp), loss_impl=args.loss_impl)
            elif args.suite == "widths":
                widths(store, Path(tmp))
            else:
                cpu(store, Path(tmp))


if __name__ == "__main__":
    main()
