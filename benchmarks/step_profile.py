"""Where a training step's device time goes: kernels of a few steps, grouped by kind.

Runs the real trainer twice for one preset (once to compile, once under the JAX profiler),
then reads the profiler's Perfetto trace and prints device time by kernel kind (matmuls,
attention, fused elementwise, reductions, scatters, copies), the top kernels, and how much
of the traced wall time the device sat idle. Budget: one 124M or 470M preset, 12 traced
steps of 64 x 1024 tokens (about 4e15 FLOPs): under a minute on one H100 after compiling.

    python benchmarks/step_profile.py --store STORE --size 124M --batch 64 [--set remat=none]
    python benchmarks/step_profile.py --trace perfetto_trace.json.gz   # read a saved trace
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

KINDS = [
    ("attention", re.compile(r"fmha|flash|sdpa|cudnn|attention", re.I)),
    ("matmul", re.compile(r"gemm|cutlass|xmma|nvjet|cublas|wgmma|matmul|dot", re.I)),
    ("scatter/gather", re.compile(r"scatter|gather|dynamic.update|dynamic.slice", re.I)),
    ("reduction", re.compile(r"reduce|reduction", re.I)),
    ("copy", re.compile(r"memcpy|memset|copy|transpose", re.I)),
    ("fused elementwise", re.compile(r"fusion|loop_|input_|convert|multiply|add", re.I)),
]


def kind_of(name: str) -> str:
    return next((k for k, rx in KINDS if rx.search(name)), "other")


def device_events(trace: dict) -> dict[str, list[dict]]:
    """Complete ('X') events on the device, by line: its kernel streams ('kernels') and,
    where the profiler writes them, the XLA op and module lines."""
    meta = [e for e in trace["traceEvents"] if e.get("ph") == "M"]
    procs = {e["pid"]: e["args"].get("name", "") for e in meta if e["name"] == "process_name"}
    dev = {pid for pid, n in procs.items() if re.search(r"GPU|TPU|device", n) and "CPU" not in n}
    threads = {
        (e["pid"], e["tid"]): e.get("args", {}).get("name", "")
        for e in meta
        if e["name"] == "thread_name" and e["pid"] in dev
    }
    lines: dict[str, list[dict]] = defaultdict(list)
    for e in trace["traceEvents"]:
        if e.get("ph") != "X" or e.get("pid") not in dev:
            continue
        line = threads.get((e["pid"], e.get("tid")), "")
        key = "ops" if "XLA Ops" in line else "modules" if "Module" in line else "kernels"
        lines[key].append(e)
    return lines


def summarise(path: Path, top: int = 25) -> None:
    with gzip.open(path, "rt") if path.suffix == ".gz" else open(path) as f:
        trace = json.load(f)
    lines = device_events(trace)
    evs = lines.get("kernels", [])
    if not evs:
        print(f"{path}: no device kernels in the trace")
        return
    by_kind: dict[str, float] = defaultdict(float)
    for e in evs:
        by_kind[kind_of(e["name"])] += e["dur"]
    busy = sum(by_kind.values())
    span = max(e["ts"] + e["dur"] for e in evs) - min(e["ts"] for e in evs)
    print(f"\n{len(evs):,} kernels; device busy {busy / 1e3:,.1f} ms of {span / 1e3:,.1f} ms")
    print(f"{'kind':>18} {'ms':>9} {'share':>6}")
    for k, t in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"{k:>18} {t / 1e3:>9.1f} {t / busy:>6.1%}")
    for key in ("kernels", "ops"):
        by_name: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
        for e in lines.get(key, []):
            by_name[e["name"]][0] += e["dur"]
            by_name[e["name"]][1] += 1
        if not by_name:
            continue
        total = sum(t for t, _ in by_name.values())
        print(f"\ntop {key}: {'ms':>8} {'calls':>6} {'share':>6}  name")
        for name, (t, n) in sorted(by_name.items(), key=lambda kv: -kv[1][0])[:top]:
            print(f"{'':>10} {t / 1e3:>8.2f} {n:>6} {t / total:>6.1%}  {name[:100]}")


def profile(store_dir: str, size: str, batch: int, steps: int, model: dict, out: Path) -> Path:
    import jax
    from train_throughput import run

    from codemix.proxy_train.store import TokenStore
    from codemix.proxy_train.train import enable_compilation_cache

    enable_compilation_cache()
    store = TokenStore(store_dir)
    with tempfile.TemporaryDirectory() as tmp:
        run(store, size, batch, 1024, 4, Path(tmp) / "warm", model=model)  # compile, cache
        logdir = Path(tmp) / "trace"
        with jax.profiler.trace(str(logdir), create_perfetto_trace=True):
            _, (s,) = run(store, size, batch, 1024, steps, Path(tmp) / "traced", model=model)
        t = s["timing"]
        print(f"{size} {batch}x1024 {model}: {t['step_tokens_per_s']:,.0f} tokens/s traced")
        found = sorted(logdir.rglob("perfetto_trace.json.gz"))
        if not found:
            raise SystemExit(f"no perfetto trace under {logdir}")
        out.mkdir(parents=True, exist_ok=True)
        dest = out / f"trace_{size}_{batch}.json.gz"
        shutil.copy(found[-1], dest)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store")
    ap.add_argument("--size", default="124M")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--set", action="append", default=[], help="model option, e.g. remat=none")
    ap.add_argument("--out", default=".", help="folder for the saved trace")
    ap.add_argument("--trace", help="summarise this saved trace instead of running")
    args = ap.parse_args()
    if args.trace:
        summarise(Path(args.trace))
        return
    if not args.store:
        ap.error("--store is needed unless --trace is given")
    model = {}
    for kv in args.set:
        k, _, v = kv.partition("=")
        model[k] = int(v) if v.isdigit() else v
    summarise(profile(args.store, args.size, args.batch, args.steps, model, Path(args.out)))


if __name__ == "__main__":
    main()
