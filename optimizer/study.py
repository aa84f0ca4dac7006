"""`codemix study run`: Optuna proposes, populations of proxies train, results go to storage
(the trials' bookkeeping is in `trials.py`, a wave's training in `wave.py`).

Everything is checked before the storage is touched: the spec, the token store, the domains,
the sizes and the steps of every stage. A study remembers what its trials train (the run
spec, the ladder, the token cap and the store's content) and refuses a spec that changes it.

Each worker loops: fail trials whose worker stopped beating (Optuna enqueues their retries),
ask a wave of trials (the first a space-filling start, later ones small enough that the
sampler sees results several times), train the wave as populations at every size of the
ladder (or the promoted share of it, with successive halving), record every size's result on
its trial, and tell Optuna the objective at the largest size. On SIGINT or SIGTERM the
trials in flight are set back (failed, marked interrupted, and enqueued again with their
parameters and the sizes they finished), so the same command resumes and the study ends
with exactly n_trials trials.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import sys
import time
import warnings

import optuna
from optuna.trial import TrialState

from codemix.core import interrupt
from codemix.core.errors import CodemixError
from codemix.core.files import atomic_write_text
from codemix.optimizer import _optuna
from codemix.optimizer.samplers import study_sampler
from codemix.optimizer.space import StudySpec, check_objectives, load_study
from codemix.optimizer.storage import open_storage, redact
from codemix.optimizer.trials import ask, finish_waiting, label, tally
from codemix.optimizer.wave import announce, run_wave, train_job
from codemix.proxy_train.store import TokenStore

SPACE_ATTR = "codemix/space"
IDENTITY_ATTR = "codemix/trained"  # the settings that decide what a trial trains
STORE_ATTR = "codemix/store"  # fingerprint of the token store's content
CONTROL_ATTR = "codemix/control"  # {param, choice}: the control of a microanneal study


def store_fingerprint(manifest: dict) -> str:
    """What a study's results depend on in a store: its tokenizer, split and sources."""
    keep = {
        "tokenizer": manifest["tokenizer"]["hash"],
        "dtype": manifest["dtype"],
        "val_frac": manifest["val_frac"],
        "domains": {
            d: {
                **{k: info[k] for k in ("train_tokens", "val_tokens", "train_bytes", "val_bytes")},
                "sources": sorted(s["blake2b"] for s in info["sources"]),
            }
            for d, info in manifest["domains"].items()
        },
    }
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def check_study(spec: StudySpec) -> TokenStore:
    """Open the store and check every part of the spec against it, before any side effect."""
    from codemix.models.accounting import param_count
    from codemix.proxy_train.spec import open_store
    from codemix.proxy_train.train import model_config_for

    base = spec.run_spec([])
    store = open_store(base)
    check_objectives(spec, store.domains)
    for p in spec.params:
        unknown = [d for d in p.values if p.kind == "simplex" and d not in store.domains]
        if unknown and p.key.startswith("stages."):
            raise CodemixError(
                f"{spec.path}: [search] {p.key!r} names {unknown}, which the token store "
                f"{store.path.absolute()} does not have (domains: {', '.join(store.domains)})"
            )
    tokens_per_step = base.train.batch_size * base.train.seq_len
    for size in spec.sizes:
        try:
            cfg = model_config_for(base.model, store.vocab_size, base.train.seq_len, size)
            base.schedule.plan(tokens_per_step, param_count(cfg).non_embedding, spec.max_tokens)
        except CodemixError as e:
            raise CodemixError(f"{spec.path}: at size {size!r}: {e}") from None
    return store


def open_study(spec: StudySpec, url: str, store: TokenStore, n_trials: int | None = None):
    """Create or load the study; refuse one of the same name that trains something else."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    n = n_trials or spec.n_trials
    start, wave = spec.waves(n)
    storage = open_storage(url, spec.heartbeat_seconds, spec.grace_seconds, spec.max_retries)
    space, grid, k = spec.distributions(), spec.grid(), len(spec.directions)
    sampler = study_sampler(spec.sampler, spec.seed, space, start, grid, k, wave)
    try:
        study = optuna.load_study(study_name=spec.name, storage=storage, sampler=sampler)
        new = False
    except KeyError:
        study = optuna.create_study(
            study_name=spec.name,
            storage=storage,
            sampler=sampler,
            directions=spec.directions,
            load_if_exists=True,
        )
        new = True
    where = f"study {spec.name!r} in {redact(url)}"
    keep = "; give the study another name (nothing was changed)"
    if [d.name.lower() for d in study.directions] != spec.directions:
        raise CodemixError(f"{where} has other objectives{keep}")
    attrs = study.user_attrs
    if attrs.get(SPACE_ATTR, spec.space_json()) != spec.space_json():
        raise CodemixError(f"{where} exists with another search space or objectives{keep}")
    trained = spec.trained_identity()
    if IDENTITY_ATTR in attrs and attrs[IDENTITY_ATTR] != json.loads(json.dumps(trained)):
        raise CodemixError(
            f"{where} trained its trials otherwise: {_diff(attrs[IDENTITY_ATTR], trained)}"
            + _SEEDING_HINT * ("study.seeding" not in attrs[IDENTITY_ATTR])
            + "; one "
            "study must not mix runs trained differently: restore the setting or give the "
            "study another name (nothing was changed)"
        )
    fingerprint = store_fingerprint(store.manifest)
    if attrs.get(STORE_ATTR, fingerprint) != fingerprint:
        raise CodemixError(
            f"{where} was trained on a token store with other contents than "
            f"{store.path.absolute()} (other tokenizer, split or sources){keep}"
        )
    if new or SPACE_ATTR not in attrs:
        study.set_user_attr(SPACE_ATTR, spec.space_json())
        with warnings.catch_warnings():  # experimental in Optuna, and harmless
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(spec.metric_names())
    if IDENTITY_ATTR not in attrs:
        study.set_user_attr(IDENTITY_ATTR, trained)
    control = {"param": spec.control_param(), "choice": spec.control} if spec.control else None
    if attrs.get(CONTROL_ATTR) != control:  # what the export measures the others against
        study.set_user_attr(CONTROL_ATTR, control)
    if STORE_ATTR not in attrs:
        study.set_user_attr(STORE_ATTR, fingerprint)
    return study


_SEEDING_HINT = (
    " (this study gave each trial a seed of its own, before paired seeds were the default: "
    "set [study] seeding = 'per-trial' to go on with it)"
)


def _diff(old: dict, new: dict) -> str:
    keys = sorted(
        k for k in set(old) | set(new) if old.get(k) != json.loads(json.dumps(new.get(k)))
    )
    shown = [f"{k} = {_show(old.get(k))} there, {_show(new.get(k))} here" for k in keys[:4]]
    return "; ".join(shown) + (f"; and {len(keys) - 4} more" if len(keys) > 4 else "")


def _show(v) -> str:
    return "(unset)" if v is None else json.dumps(v)


def _claim_out(spec: StudySpec) -> None:
    """A study's run folders belong to it: another study with the same `out` is refused."""
    record = spec.out / "study.json"
    if record.is_file():
        owner = json.loads(record.read_text()).get("study")
        if owner != spec.name:
            raise CodemixError(
                f"{spec.path}: [study] out = {str(spec.out)!r} ({spec.out.absolute()}) holds the "
                f"runs of study {owner!r}; give this study a folder of its own"
            )
        return
    spec.out.mkdir(parents=True, exist_ok=True)
    # the store lets `codemix evaluate` open a trial's checkpoint without being told it
    store = str(spec.run_spec([]).store.absolute())
    atomic_write_text(record, json.dumps({"study": spec.name, "store": store}) + "\n")


def follow(spec: StudySpec) -> None:
    """A multi-host worker's other processes: train each population the first process
    announces, until it announces none. Only the first process talks to the storage."""
    store = check_study(spec)
    while (job := announce(None)) is not None:
        train_job(spec, store, job)


def _wait_for_others(study, spec: StudySpec, n_trials: int, quiet: bool) -> bool:
    """While the budget is taken by trials that other workers train, wait for them (a dead
    worker's trials come back as retries after the grace period). False: nothing to wait for."""
    shown = 0.0
    while True:
        optuna.storages.fail_stale_trials(study)
        c = tally(study)
        if c["finished"] >= n_trials or c["budget"] < n_trials:
            return True
        running = [t.number for t in study.get_trials(deepcopy=False, states=[TrialState.RUNNING])]
        if not _optuna.has_heartbeats(study):
            print(
                f"study {spec.name}: {c['finished']} of {n_trials} trials finished; "
                f"{label(running)} running elsewhere. This storage keeps no heartbeats, so "
                "trials of a worker that died stay RUNNING: run the study under a new name "
                "or in SQLite/PostgreSQL storage to have them retried",
                flush=True,
            )
            return False
        if time.time() - shown > 60:
            shown = time.time()
            print(
                f"study {spec.name}: waiting for {label(running)} running elsewhere "
                f"({c['finished']} of {n_trials} finished); a worker silent for "
                f"{spec.grace_seconds} s has its trials retried here",
                flush=True,
            )
        for _ in range(max(1, min(spec.heartbeat_seconds, 5)) * 10):
            interrupt.check()
            time.sleep(0.1)


def worker(spec: StudySpec, url: str, n_trials: int, quiet: bool = False) -> None:
    """One worker's loop until the study has n_trials finished trials."""
    grid = spec.grid()
    if grid and n_trials > math.prod(len(v) for v in grid.values()):
        raise CodemixError(
            f"{spec.path}: {n_trials} trials but the grid has only "
            f"{math.prod(len(v) for v in grid.values())} points"
        )
    from codemix.proxy_train.train import enable_compilation_cache

    # Optuna warns that heartbeats are meant for Study.optimize; codemix beats itself
    warnings.filterwarnings("ignore", message="Heartbeat of storage", category=UserWarning)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    store = check_study(spec)
    study = open_study(spec, url, store, n_trials)
    _claim_out(spec)
    enable_compilation_cache()
    start, wave = spec.waves(n_trials)
    t0, trained = time.time(), 0
    while True:
        optuna.storages.fail_stale_trials(study)
        c = tally(study)
        if c["finished"] >= n_trials:
            break
        want = start - c["budget"] if c["budget"] < start else wave
        number = 1 if c["budget"] < start else 2 + (c["budget"] - start) // wave
        waves = 1 + math.ceil((n_trials - start) / wave)
        trials = ask(study, spec, n_trials, want)
        if not trials:
            if not _wait_for_others(study, spec, n_trials, quiet):
                return
            continue
        run_wave(study, spec, store, trials, quiet, f"wave {number} of {waves}: ")
        trained += len(trials)
        _report(study, spec, n_trials, trained, time.time() - t0, waves - number)
    finish_waiting(study)
    c = tally(study)
    extra = ", ".join(f"{c[k]} {k}" for k in ("pruned", "fail") if c[k])
    print(
        f"study {spec.name}: complete, {c['finished']} of {n_trials} trials"
        + (f" ({c['complete']} complete, {extra})" if extra else ""),
        flush=True,
    )


def _report(study, spec: StudySpec, n_trials: int, trained: int, elapsed: float, left: int):
    c = tally(study)
    best = ""
    if len(spec.directions) == 1 and c["complete"]:
        bt = study.best_trial
        best = f" | best {spec.metric_names()[0]} {bt.value:.4f} (trial {bt.number})"
    rate = elapsed / max(1, trained)
    eta = rate * max(0, n_trials - c["finished"])
    waves = f"{left} wave{'s' if left != 1 else ''} to go" if left else "last wave done"
    print(
        f"[{spec.name}] trials {c['finished']}/{n_trials} done ({c['complete']} complete, "
        f"{c['pruned']} pruned, {c['fail']} failed), {c['running']} running, {waves}{best} | "
        f"{rate:.1f} s/trial here, ETA {eta / 60:.1f} min",
        flush=True,
    )


def _worker_process(spec_path: str, overrides: list[str], url: str, n: int) -> None:
    """Entry point of an extra worker process (spawned: a fresh interpreter, no JAX state).
    It leaves the terminal's process group, so a Ctrl-C reaches it once, forwarded by the
    first worker, and a second signal cannot cut short the setting back of its trials."""
    os.setpgrp()
    spec = load_study(spec_path, overrides)
    try:
        with interrupt.stop_on_signals():
            worker(spec, url, n, quiet=True)
    except interrupt.Interrupted as e:
        sys.exit(e.exit_code)
    except CodemixError as e:
        print(f"codemix: error: {e}", file=sys.stderr)
        sys.exit(2)


def run_study(
    spec: StudySpec, overrides: list[str], url: str, n_trials: int | None, workers: int, quiet: bool
) -> None:
    """Start `workers` workers on one study (this process is one of them). Multi-host
    (`CODEMIX_DISTRIBUTED=1`), the processes of a job form one worker: the first asks
    and tells, all of them train each population together."""
    from codemix.proxy_train.sharding import init_distributed

    n = n_trials or spec.n_trials
    if init_distributed():
        if workers > 1:
            raise CodemixError("--workers: a multi-host job is one worker; start one per job")
        import jax

        with interrupt.stop_on_signals():
            if jax.process_index() > 0:
                follow(spec)
            else:
                worker(spec, url, n, quiet)
                announce(None)  # the followers' signal to stop
        return
    store = check_study(spec)  # spec, store and storage errors surface before any process
    open_study(spec, url, store, n)
    _claim_out(spec)
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_worker_process, args=(str(spec.path), overrides, url, n))
        for _ in range(workers - 1)
    ]
    for p in procs:
        p.start()
    try:
        with interrupt.stop_on_signals():
            worker(spec, url, n, quiet)
    except interrupt.Interrupted:
        for p in procs:
            if p.is_alive():
                p.terminate()  # SIGTERM: each sets its own trials back and exits
        for p in procs:
            p.join(interrupt.STOP_SECONDS + 10)
            if p.is_alive():
                p.kill()
        raise
    for p in procs:
        p.join()
    failed = [p.exitcode for p in procs if p.exitcode]
    if failed:
        raise CodemixError(
            f"{len(failed)} of {workers - 1} extra workers failed; run the same command again "
            "to finish the study"
        )
