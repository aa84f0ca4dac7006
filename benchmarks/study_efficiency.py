"""Study efficiency of the samplers on a known mixture law, and per-trial overhead.

Part 1: trials that random search, QMC (scrambled Sobol), TPE and GP need before the best
trial is within 1 % of the known optimum of a synthetic NL validation loss over a codemix
search space: code share of the init, continual and cooldown stages ([0, 1] each), the
cooldown length (fraction of the run, [0.05, 0.3]), the high-quality share of code ([0, 1]).
The law is Data-Mixing-Laws-style (Ye et al. 2024): per stage and validation domain (held-out
text 70 %, NL reasoning 30 %) L_v = c_v + k_v exp(t_v . r) over the stage mixture r = (text,
web code, hq code); stages combine by tokens (cooldown tokens weigh 2.5x); the small hq set
saturates when repeated; a WSD-style term favours an 18 % cooldown. Optimum: ~27 % code in
init, 13 % continual, 27 % cooldown (Aryabumi et al. 2024: ~25 % code best for NL, code in
the cooldown helps, too much code hurts). L* and L_worst: L-BFGS-B from 200 starts.
Observations carry Gaussian noise (sd 0.2 % of L); a hit is judged on the noiseless loss of
the best-observed trial. Criteria: (L - L*) / L* <= 1 % (the issue's; ~4 % of the space)
and the harder (L - L*) / (L_worst - L*) <= 1 % (~0.2 % of the space).
Part 2: per-trial time in the sampler and in storage plus framework (in memory, SQLite file,
SQLite on tmpfs, PostgreSQL on localhost if it answers within 2 s) at 50 and 200 trials, as
a share of a trial: 4.2 s (a 1.9M-parameter proxy on an H100: 64 x 20M tokens in 269 s) and
30 s (a quickstart trial on a 2-core CPU).

Budget: no model training. On a 2-core CPU ~1.5 minutes without GP (20 repetitions of up
to 200 trials per sampler); GP (PyTorch; skipped with a note without it) adds ~10 minutes.
`--quick`: 3 repetitions of 60 trials, overhead at 50 trials only, ~30 s.

    python benchmarks/study_efficiency.py [--quick] [--reps 20] [--trials 200]
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.study import Study
from optuna.trial import FrozenTrial
from scipy.optimize import minimize
from scipy.stats import qmc

from codemix.optimizer.samplers import LEARNING, make_sampler, study_sampler
from codemix.optimizer.space import wave_plan
from codemix.optimizer.storage import open_storage

PARAMS = {
    "stages.init.code_frac": (0.0, 1.0),
    "stages.continual.code_frac": (0.0, 1.0),
    "stages.cooldown.code_frac": (0.0, 1.0),
    "stages.cooldown.fraction": (0.05, 0.3),
    "groups.code.hq": (0.0, 1.0),
}
LOW = np.array([lo for lo, _ in PARAMS.values()])
HIGH = np.array([hi for _, hi in PARAMS.values()])
# exponents t per stage (init, continual, cooldown) over (text, web code, hq code)
T_TEXT = np.array([[-1.2, 0.0, 0.2]] * 3)
T_REASON = np.array([[0.0, -2.6, -5.0], [0.0, -1.2, -3.0], [0.0, -2.0, -5.0]])
C_TEXT, K_TEXT, C_REASON, K_REASON = 1.9, 1.0, 2.1, 1.0
W_TEXT, W_REASON = 0.7, 0.3  # validation set: held-out text and NL reasoning
STAGE_GAIN = np.array([1.0, 0.8, 2.5])
HQ_SCALE = 0.04  # the high-quality set lasts ~4 % of the run before it repeats
NOISE = 0.002
SHM = "/dev/shm"  # tmpfs: SQLite without the disk's fsync cost
TRIAL_SECONDS = {"H100 proxy": 4.2, "CPU quickstart": 30.0}
OVERHEAD_HEADER = """| sampler | storage | trials | sampler ms | storage + framework ms | total ms \
| share of 4.2 s | share of 30 s |
|---|---|---|---|---|---|---|---|"""


def nl_loss(x: np.ndarray) -> float:
    """The known law: NL validation loss of a mixture schedule x (order of PARAMS)."""
    code, f, hq = x[:3], x[3], x[4]
    tokens = np.array([(1 - f) / 2, (1 - f) / 2, f])
    hq_total = float((tokens * code * hq).sum())
    sat = HQ_SCALE * -np.expm1(-hq_total / HQ_SCALE) / hq_total if hq_total > 1e-12 else 1.0
    r = np.stack([1 - code, code * (1 - hq), code * hq * sat], axis=1)
    per_stage = W_TEXT * (C_TEXT + K_TEXT * np.exp((T_TEXT * r).sum(1))) + W_REASON * (
        C_REASON + K_REASON * np.exp((T_REASON * r).sum(1))
    )
    weight = STAGE_GAIN * tokens / (STAGE_GAIN * tokens).sum()
    return float((weight * per_stage).sum() + 0.02 * np.log(f / 0.18) ** 2)


def known_extremes(starts: int = 200) -> tuple[np.ndarray, float, float]:
    """(x*, L*, L_worst) by L-BFGS-B from many random starts."""
    rng, bounds = np.random.default_rng(0), list(zip(LOW, HIGH, strict=True))
    lo, hi = [], []
    for _ in range(starts):
        x0 = LOW + rng.random(len(LOW)) * (HIGH - LOW)
        lo.append(minimize(nl_loss, x0, bounds=bounds, method="L-BFGS-B"))
        hi.append(minimize(lambda x: -nl_loss(x), x0, bounds=bounds, method="L-BFGS-B"))
    best, worst = min(lo, key=lambda r: r.fun), min(hi, key=lambda r: r.fun)
    return best.x, float(best.fun), float(-worst.fun)


def space_share(target: float, n: int = 2**14) -> float:
    """Share of the search space (a Sobol sample) with loss <= target."""
    x = LOW + qmc.Sobol(len(LOW), seed=0).random(n) * (HIGH - LOW)
    return float(np.mean([nl_loss(row) for row in x] <= np.float64(target)))


def suggest(trial: optuna.Trial) -> np.ndarray:
    return np.array([trial.suggest_float(k, lo, hi) for k, (lo, hi) in PARAMS.items()])


DISTRIBUTIONS = {
    k: optuna.distributions.FloatDistribution(lo, hi) for k, (lo, hi) in PARAMS.items()
}


def plan_for(name: str, n_trials: int, plan: str) -> tuple[int, int]:
    """(start, wave) of a plan: "default" is the runner's own rule; "SxW" fixes both."""
    if plan == "default":
        return wave_plan(name, n_trials, len(PARAMS))
    if plan == "sequential":
        return wave_plan(name, n_trials, len(PARAMS), wave_size=1)
    start, wave = map(int, plan.split("x"))
    return wave_plan(name, n_trials, len(PARAMS), start, wave)


def trials_to_hit(
    name: str, seed: int, n_trials: int, targets: list[float], plan: str
) -> list[int]:
    """Trials until the best-observed trial's true loss is <= each target (n_trials + 1:
    never), asked as the study runner asks: through its sampler (a Sobol start, then the
    named sampler seeded per trial), a whole wave asked before any of it is told, the
    wave's parameters drawn in order while its earlier trials are still running."""
    start, wave = plan_for(name, n_trials, plan)
    sampler = study_sampler(name, seed, DISTRIBUTIONS, start, wave=wave)
    study = optuna.create_study(sampler=sampler)
    rng = np.random.default_rng(seed + 1000)
    hits = [n_trials + 1] * len(targets)
    best_obs, best_true, asked = np.inf, np.inf, 0
    while asked < n_trials and max(hits) > n_trials:
        size = min(start if asked == 0 else wave, n_trials - asked)
        trials = [study.ask() for _ in range(size)]
        xs = [suggest(t) for t in trials]
        for t, x in zip(trials, xs, strict=True):
            asked += 1
            true = nl_loss(x)
            observed = true * (1 + NOISE * rng.standard_normal())
            study.tell(t, observed)
            if observed < best_obs:
                best_obs, best_true = observed, true
            for j, target in enumerate(targets):
                hits[j] = asked if hits[j] > n_trials and best_true <= target else hits[j]
    return hits


def fmt(v: float, n_trials: int) -> str:
    return f">{n_trials}" if v > n_trials else f"{round(v, 1):g}"


def efficiency(
    samplers: list[str], reps: int, n_trials: int, targets: list[float], plans: list[str]
) -> None:
    """Median, IQR and misses of trials-to-target per sampler and wave plan; speed-up
    against random."""
    results = {}
    for name in samplers:
        for plan in plans if name in LEARNING else ["default"]:
            t0 = time.perf_counter()
            start, wave = plan_for(name, n_trials, plan)
            hits = [trials_to_hit(name, s, n_trials, targets, plan) for s in range(reps)]
            results[(name, start, wave)] = np.array(hits)
            print(
                f"  {name}, start {start}, waves of {wave}: {reps} repetitions in "
                f"{time.perf_counter() - t0:.1f} s",
                flush=True,
            )
    labels = ["gap <= 1 % of L*", "gap <= 1 % of (L_worst - L*)"]
    for j, label in enumerate(labels):
        print(
            f"\n{label}: target {targets[j]:.4f}, {space_share(targets[j]):.2%} of the space; "
            f"{reps} repetitions of at most {n_trials} trials, asked in waves"
        )
        print("| sampler | start | wave | median trials | mean | IQR | never reached | vs random |")
        print("|---|---|---|---|---|---|---|---|")
        base = next((np.median(h[:, j]) for k, h in results.items() if k[0] == "random"), np.nan)
        for (name, start, wave), hits in results.items():
            med, (q1, q3) = np.median(hits[:, j]), np.percentile(hits[:, j], [25, 75])
            speed = "-" if med > n_trials else f"{base / med:.1f}x"
            speed = f"> {n_trials / med:.1f}x" if base > n_trials >= med else speed
            shape = ("all", "-") if start == n_trials else (start, wave)
            mean = f"{hits[:, j].mean():.1f}" if (hits[:, j] <= n_trials).all() else "-"
            print(
                f"| {name} | {shape[0]} | {shape[1]} | {fmt(med, n_trials)} | {mean} | "
                f"{fmt(q1, n_trials)}-{fmt(q3, n_trials)} "
                f"| {int((hits[:, j] > n_trials).sum())}/{reps} | {speed} |"
            )


def _timed(fn: Callable[..., Any], clock: list[float]) -> Callable[..., Any]:
    def timed(*args: Any) -> Any:
        t0, clock[1] = time.perf_counter(), clock[1] + 1
        try:
            return fn(*args)
        finally:
            clock[1] -= 1
            clock[0] += 0.0 if clock[1] else time.perf_counter() - t0

    return timed


def clocked(sampler: optuna.samplers.BaseSampler) -> list[float]:
    """Wraps the sampler's methods in place; returns [seconds spent in them, call depth]."""
    clock = [0.0, 0.0]
    for method in ("infer_relative_search_space", "sample_relative", "sample_independent",
                   "before_trial", "after_trial"):  # fmt: skip
        setattr(sampler, method, _timed(getattr(sampler, method), clock))
    return clock


def timed_trials(study: Study, clock: list[float], n_trials: int) -> np.ndarray:
    """Per trial: (sampler s, total s) of `study.optimize` whose trials do with the study what
    a codemix trial does (5 suggestions, 5 intermediate reports, 3 user attributes) but
    train nothing."""
    rng = np.random.default_rng(len(study.trials))
    rows, marks = [], [time.perf_counter(), clock[0]]

    def objective(trial: optuna.Trial) -> float:
        loss = nl_loss(suggest(trial))
        for step in range(5):
            trial.report(loss + 0.1 / (step + 1), step)
        for key in ("tokens_seen", "epochs.hq", "bpb.code"):
            trial.set_user_attr(key, float(rng.random()))
        return loss * (1 + NOISE * rng.standard_normal())

    def done(study: Study, trial: FrozenTrial) -> None:
        now = time.perf_counter()
        rows.append((clock[0] - marks[1], now - marks[0]))
        marks[:] = [now, clock[0]]

    study.optimize(objective, n_trials=n_trials, callbacks=[done])
    return np.array(rows)


def postgres_url(url: str) -> str | None:
    """`url` when a PostgreSQL server answers there within 2 s, else None."""
    try:
        import psycopg2

        psycopg2.connect(url, connect_timeout=2).close()
        return url
    except Exception as e:  # not installed, refused, no such role: skip either way
        print(f"  PostgreSQL at {url}: skipped ({str(e).splitlines()[0] or type(e).__name__})")
        return None


def overhead(samplers: list[str], counts: list[int], pg: str, window: int = 10) -> None:
    """Per-trial sampler and storage time at each trial count, and its share of a trial.
    In memory: one study of max(counts) trials. Persistent storages: that study's first
    n - window trials are copied in, then `window` trials (after one untimed) are timed."""
    shares = " / ".join(f"{v:g} s ({k})" for k, v in TRIAL_SECONDS.items())
    shm_dir = SHM if Path(SHM).is_dir() else None
    with tempfile.TemporaryDirectory() as disk, tempfile.TemporaryDirectory(dir=shm_dir) as shm:
        storages = {
            "SQLite file": lambda key: f"sqlite:///{Path(disk) / key}.db",
            "SQLite on tmpfs": lambda key: f"sqlite:///{Path(shm) / key}.db",
            "PostgreSQL": lambda key: pg,
        }
        if shm_dir is None:
            del storages["SQLite on tmpfs"]
        if postgres_url(pg) is None:
            del storages["PostgreSQL"]
        print(
            f"\nper-trial overhead, mean of the {window} trials up to each count; share of "
            f"a trial of {shares}"
        )
        print(OVERHEAD_HEADER)

        def show(name: str, label: str, n: int, rows: np.ndarray) -> None:
            s, total = rows.mean(axis=0) * 1e3
            share = " | ".join(f"{total / 1e3 / v:.2%}" for v in TRIAL_SECONDS.values())
            print(
                f"| {name} | {label} | {n} | {s:.1f} | {total - s:.1f} | {total:.1f} | {share} |",
                flush=True,
            )

        for name in samplers:
            sampler = make_sampler(name, seed=0)
            clock = clocked(sampler)
            memory = optuna.create_study(sampler=sampler)
            rows = timed_trials(memory, clock, max(counts))
            for n in counts:
                show(name, "in memory", n, rows[n - window : n])
            for label, url_for in storages.items():
                for n in counts:
                    key = f"bench-{name}-{n}"
                    sampler = make_sampler(name, seed=0)
                    clock = clocked(sampler)
                    storage = open_storage(url_for(key))
                    study = optuna.create_study(storage=storage, sampler=sampler, study_name=key)
                    study.add_trials(memory.trials[: n - window])
                    show(name, label, n, timed_trials(study, clock, window + 1)[1:])
                    if label == "PostgreSQL":
                        optuna.delete_study(study_name=key, storage=url_for(key))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 repetitions of 60 trials (~30 s)")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--samplers", default="random,qmc,tpe,gp")
    ap.add_argument(
        "--plans",
        default="default",
        help="wave plans of the learning samplers: default (the runner's rule), sequential, "
        "or START x WAVE such as 10x4; comma-separated",
    )
    ap.add_argument("--no-overhead", action="store_true", help="skip the per-trial overhead")
    ap.add_argument("--postgres", default="postgresql://postgres@localhost/postgres")
    args = ap.parse_args()
    reps, n_trials = (3, 60) if args.quick else (args.reps, args.trials)
    counts = [50] if args.quick else [50, 200]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore")  # QMC sample sizes, experimental-feature notes
    samplers = args.samplers.split(",")
    if "gp" in samplers and importlib.util.find_spec("torch") is None:
        print("gp: not run, needs PyTorch (pip install torch)")
        samplers.remove("gp")
    print(
        f"machine: {platform.machine()}, python {platform.python_version()}, "
        f"optuna {optuna.__version__}"
    )
    x_best, l_best, l_worst = known_extremes()
    optimum = ", ".join(f"{k}={v:.3f}" for k, v in zip(PARAMS, x_best, strict=True))
    print(f"known optimum: {optimum}\nL* = {l_best:.4f}, L_worst = {l_worst:.4f}")
    targets = [l_best * 1.01, l_best + 0.01 * (l_worst - l_best)]
    efficiency(samplers, reps, n_trials, targets, args.plans.split(","))
    if not args.no_overhead:
        overhead(samplers, counts, args.postgres)


if __name__ == "__main__":
    main()
