"""Branched stage studies: compute and wall time against every trial from step zero, how far
a branched run lands from its from-scratch twin, and how much paired seeds shrink the noise
of a difference between two mixtures.

The study: a grid of 3 init code shares x 8 cooldown code shares, 20 % cooldown (8 + 2
tokens per non-embedding parameter), at "1M" (0.85M non-embedding parameters, 8.5M tokens
a run) and "2M" (2.2M, 22M tokens), vocab 4096 (`make demo`'s store), 16 x 256 tokens a
step, every trial at both sizes. From scratch: 24 x 30.5M = 0.73B tokens, about 2.5e15
FLOPs; branched, (0.8 + 0.2 x 8) / 8 = 0.3 of it. Expected wall time on one H100 or H200:
about 3 minutes from scratch, 1.5 branched (the trunks train as populations of 3, which
use the GPU less well than the 24 branches).

    python benchmarks/branching.py run --mode branched --seed 0 --out DIR   # on the GPU
    python benchmarks/branching.py run --mode scratch --seed 0 --out DIR
    python benchmarks/branching.py table DIR [DIR ...]                      # anywhere
    python benchmarks/branching.py phases RUNS/branched-0 [RUNS/scratch-0]   # where it ran

At "4M" with 32 x 1024 tokens a step (24 x 40M tokens, 4.5e16 FLOPs from scratch; about 3
minutes from scratch and 1.7 branched on one H200), where a population of 24 fills the GPU:
add --set 'study.sizes=["4M"]' --set train.seq_len=1024 --set train.batch_size=32.

With `--set study.seeds=K` every trial runs K seed replicates (paired: replicate k of every
trial has seed + k), so a wave trains 3K trunks in one population and 24K branches: the
table then takes the seed spread and the paired-seed noise from the replicates.

`run` writes the spec into DIR, trains it with `codemix study run` (storage DIR/study.db,
run folders under --runs), and records the wall time. `table` reads the storages (Optuna
and numpy only) and prints: FLOPs charged against the whole schedules' FLOPs and wall time;
branched minus from scratch per run (same seed), with its standard error over trunks (the
branches of one trunk share its drift), beside the seed-to-seed spread of one branched run
(pooled over the grid's cells, from every seed the folders hold); and the noise of a
difference between two mixtures with paired seeds (both runs of one seed) against unpaired
ones (one run of each seed), over every pair of seeds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SPEC = """# written by benchmarks/branching.py
[data]
store = "{store}"
[model]
size = "1M"
[train]
seq_len = 256
batch_size = 16
lr_peak = 3e-3
eval_tokens = 16384
seed = {seed}
[[stages]]
name = "init"
tokens_per_param = 8
code_frac = 0.25
lr = {{ shape = "cosine", warmup = 0.05, end = 0.3 }}
[[stages]]
name = "cooldown"
tokens_per_param = 2
code_frac = 0.2
lr = {{ shape = "linear", start = "continue", end_lr = 1e-6 }}
[study]
name = "branching-{mode}-{seed}"
sampler = "grid"
n_trials = 24
sizes = ["1M", "2M"]
branch = {branch}
out = "{runs}"
[search]
"stages.init.code_frac" = {{ values = [0.1, 0.25, 0.5] }}
"stages.cooldown.code_frac" = {{ values = [0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6] }}
[[objectives]]
metric = "bpb.text"
"""


def run(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = out / "spec.toml"
    runs = Path(args.runs) / f"{args.mode}-{args.seed}"
    spec.write_text(
        SPEC.format(
            store=Path(args.store).absolute(),
            seed=args.seed,
            mode=args.mode,
            branch=str(args.mode == "branched").lower(),
            runs=runs,
        )
    )
    t0 = time.time()
    cmd = [sys.executable, "-m", "codemix", "study", "run", str(spec)]
    cmd += [x for kv in args.set for x in ("--set", kv)]
    subprocess.run([*cmd, "--storage", f"sqlite:///{out / 'study.db'}", "--quiet"], check=True)
    wall = time.time() - t0
    (out / "timing.json").write_text(json.dumps({"wall_s": wall, "mode": args.mode}))
    print(f"{args.mode} seed {args.seed}: {wall:.0f} s", flush=True)


def _load(folder: Path) -> dict:
    """{(size, seed, init, cooldown): result} (every seed replicate) and the study's facts."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{folder / 'study.db'}"
    (summary,) = optuna.get_all_study_summaries(url)
    study = optuna.load_study(study_name=summary.study_name, storage=url)
    results = {}
    for t in study.trials:
        key = (t.params["stages.init.code_frac"], t.params["stages.cooldown.code_frac"])
        for attr, r in t.user_attrs.items():
            if attr.startswith("codemix/result/") and "final" in r:
                results[(attr.split("/")[2], int(r["seed"]), *key)] = r
    timing = json.loads((folder / "timing.json").read_text())
    seeds = sorted({k[1] for k in results})
    return {"results": results, "mode": timing["mode"], "wall": timing["wall_s"], "seeds": seeds}


def table(args) -> None:
    studies = [_load(Path(f)) for f in args.dirs]
    print("| study | seeds | runs | FLOPs of the schedules | FLOPs charged | ratio | wall s |")
    print("|---|---|---|---|---|---|---|")
    for s in studies:
        r = list(s["results"].values())
        whole = sum(x["flops"] for x in r)
        spent = sum(x.get("flops_charged", x["flops"]) for x in r)
        seeds = ",".join(map(str, s["seeds"]))
        print(
            f"| {s['mode']} | {seeds} | {len(r)} | {whole:.3g} | {spent:.3g} | "
            f"{spent / whole:.3f} | {s['wall']:.0f} |"
        )
    branched, scratch = {}, {}
    for s in studies:
        (branched if s["mode"] == "branched" else scratch).update(s["results"])
    sizes = sorted({k[0] for k in branched | scratch})
    for metric in ("text", "code"):
        print(f"\nbpb.{metric}: branched minus from scratch (same seed), and the seed spread")
        print(
            "| size | runs | trunks | mean diff | its s.e. (over trunks) | mean abs diff "
            "| max abs diff | seed sd (one run) |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for size in sizes:
            keys = sorted(k for k in branched if k[0] == size and k in scratch)
            sd, _ = _seed_sd(branched, size, metric)
            if not keys:
                print(f"| {size} | 0 | | | | | | {sd:.4f} |")
                continue
            d = np.array([_bpb(branched[k], metric) - _bpb(scratch[k], metric) for k in keys])
            # the branches of one trunk share its drift: the trunks are the independent draws
            trunk = [k[1:3] for k in keys]
            means = np.array([d[[t == u for t in trunk]].mean() for u in sorted(set(trunk))])
            se = means.std(ddof=1) / np.sqrt(means.size) if means.size > 1 else float("nan")
            print(
                f"| {size} | {d.size} | {means.size} | {d.mean():+.4f} | {se:.4f} | "
                f"{np.abs(d).mean():.4f} | {np.abs(d).max():.4f} | {sd:.4f} |"
            )
        _paired_table(branched, sizes, metric)


def _seed_sd(results: dict, size: str, metric: str) -> tuple[float, int]:
    """Pooled standard deviation of one run over seeds, per (init, cooldown) cell."""
    cells: dict = {}
    for k, r in results.items():
        if k[0] == size:
            cells.setdefault(k[2:], []).append(_bpb(r, metric))
    ss = sum(((np.array(v) - np.mean(v)) ** 2).sum() for v in cells.values() if len(v) > 1)
    dof = sum(len(v) - 1 for v in cells.values() if len(v) > 1)
    return (float(np.sqrt(ss / dof)) if dof else float("nan")), dof


def _paired_table(results: dict, sizes: list[str], metric: str) -> None:
    """Noise of a difference between two mixtures with paired seeds (both runs of one seed)
    against unpaired ones (one run of each seed), over every pair of seeds."""
    seeds = sorted({k[1] for k in results})
    if len(seeds) < 2:
        return
    print(f"\nbpb.{metric}: noise of a difference between two mixtures (RMS, bpb)")
    print("| size | pairs | paired seeds | unpaired seeds | ratio |")
    print("|---|---|---|---|---|")
    for size, (kind, same) in itertools.product(sizes, _PAIRS):
        paired, unpaired = [], []
        for a, b in itertools.combinations(seeds, 2):
            cells = sorted(
                k[2:] for k in results if k[:2] == (size, a) and (size, b, *k[2:]) in results
            )
            y0 = np.array([_bpb(results[(size, a, *c)], metric) for c in cells])
            y1 = np.array([_bpb(results[(size, b, *c)], metric) for c in cells])
            for i, j in itertools.combinations(range(len(cells)), 2):
                if same is not None and (cells[i][0] == cells[j][0]) != same:
                    continue
                # two estimates of y_i - y_j whose expectations agree: their gap is noise
                paired.append(((y0[i] - y0[j]) - (y1[i] - y1[j])) ** 2 / 2)
                unpaired.append(((y0[i] - y1[j]) - (y1[i] - y0[j])) ** 2 / 2)
        if paired:
            p, u = np.sqrt(np.mean(paired)), np.sqrt(np.mean(unpaired))
            print(f"| {size}, {kind} | {len(paired)} | {p:.4f} | {u:.4f} | {p / u:.2f} |")


def phases(args) -> None:
    """Where each population's wall time went, from the run folders' summary.json and the
    trunks' trunk.json (seconds; steps: after the first, compiling step)."""
    cols = ("setup_s", "restore_s", "compile_s", "steps_s", "eval_s", "checkpoint_s")
    print(
        "| study | population | members | wall | "
        + " | ".join(c[:-2] for c in cols)
        + " | trunk saves |"
    )
    print("|---|---|---|---|" + "---|" * (len(cols) + 1))
    for folder in map(Path, args.runs):
        pops: dict = {}
        for f in sorted(folder.rglob("trunk.json")):
            t = json.loads(f.read_text()).get("timing")
            if t:
                pops.setdefault(("trunks", json.dumps(t)), [t, 0])[1] += 1
        for f in sorted(folder.rglob("summary.json")):
            r = json.loads(f.read_text())
            kind = "branches" if r.get("trunk") else "from scratch"
            t = r["timing"]  # the same for every member of a population
            pop = pops.setdefault((kind, json.dumps(t)), [dict(t, wall_s=0.0), 0])
            pop[0]["wall_s"] = max(pop[0]["wall_s"], r["wall_time_s"])
            pop[1] += 1
        for (kind, _), (t, n) in sorted(pops.items(), key=lambda kv: kv[0][0] != "trunks"):
            vals = " | ".join(f"{t.get(c, float('nan')):.1f}" for c in cols)
            print(
                f"| {folder.name} | {kind} | {n} | {t['wall_s']:.1f} | {vals} | "
                f"{t.get('trunk_save_s', float('nan')):.1f} |"
            )


_PAIRS = (("all pairs", None), ("same init (one trunk)", True), ("other init", False))


def _bpb(result: dict, domain: str) -> float:
    return float(result["final"]["bpb"][domain])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--mode", choices=("branched", "scratch"), required=True)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", required=True)
    r.add_argument("--runs", default="/tmp/codemix-branching")
    r.add_argument("--store", default="runs/demo/store")
    r.add_argument("--set", action="append", default=[], help="spec overrides (smoke tests)")
    t = sub.add_parser("table")
    t.add_argument("dirs", nargs="+")
    ph = sub.add_parser("phases")
    ph.add_argument("runs", nargs="+", help="a study's run folder (--runs/MODE-SEED)")
    args = ap.parse_args()
    {"run": run, "table": table, "phases": phases}[args.cmd](args)


if __name__ == "__main__":
    main()
