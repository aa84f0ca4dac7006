"""`codemix study run`: Optuna proposes, populations of proxies train, results go to storage.

Each worker loops: fail trials whose worker stopped beating (they are retried with the
same parameters), ask a batch of trials, train the batch as one population at every size
of the ladder (or the promoted share of it, with successive halving), record every size's
result on its trial, and tell Optuna the objective at the largest size. Running the same
command again resumes: finished trials stay, and only the missing ones are asked.
"""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
import threading
import time
import warnings
from collections import defaultdict

from codemix.errors import CodemixError
from optimizer.samplers import make_sampler
from optimizer.space import StudySpec, check_objectives
from optimizer.storage import open_storage, redact

SPACE_ATTR = "codemix/space"
RESULT_ATTR = "codemix/result/"
REASON_ATTR = "codemix/reason"
SURPLUS_ATTR = "codemix/surplus"


def open_study(spec: StudySpec, url: str):
    """Create or load the study; refuse one of the same name with another search space."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url, spec.heartbeat_seconds, spec.grace_seconds, spec.max_retries)
    sampler = make_sampler(spec.sampler, spec.seed, spec.grid(), len(spec.directions))
    try:
        study = optuna.load_study(study_name=spec.name, storage=storage, sampler=sampler)
    except KeyError:
        study = optuna.create_study(
            study_name=spec.name,
            storage=storage,
            sampler=sampler,
            directions=spec.directions,
            load_if_exists=True,
        )
    if [d.name.lower() for d in study.directions] != spec.directions:
        raise CodemixError(
            f"study {spec.name!r} in {redact(url)} has other objectives; "
            "give the study another name (nothing was changed)"
        )
    space = study.user_attrs.get(SPACE_ATTR)
    if space is None:
        study.set_user_attr(SPACE_ATTR, spec.space_json())
    elif space != spec.space_json():
        raise CodemixError(
            f"study {spec.name!r} in {redact(url)} exists with another search space or "
            "objectives; give the study another name (nothing was changed)"
        )
    return study


def _tell(study, trial, **kw) -> None:
    """study.tell, minus the grid sampler's study.stop() once the grid is used up, which
    Optuna allows only inside optimize(); the trial itself is stored either way."""
    try:
        study.tell(trial, **kw)
    except RuntimeError as e:
        if "Study.stop" not in str(e):
            raise


def _counts(study) -> dict[str, int]:
    from optuna.trial import TrialState as S

    c: dict[str, int] = defaultdict(int)
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get(SURPLUS_ATTR):
            continue
        if t.state == S.FAIL and REASON_ATTR not in t.user_attrs:
            c["lost"] += 1  # a stopped worker's trial; it is retried as a new one
            continue
        c[t.state.name.lower()] += 1
    c["budget"] = c["complete"] + c["pruned"] + c["running"] + c["waiting"] + c["fail"]
    return c


def _budget_before(study, number: int) -> int:
    """Trials that count towards n_trials up to and including trial `number`."""
    from optuna.trial import TrialState as S

    return sum(
        1
        for t in study.get_trials(deepcopy=False)
        if t.number <= number
        and not t.user_attrs.get(SURPLUS_ATTR)
        and not (t.state == S.FAIL and REASON_ATTR not in t.user_attrs)
    )


class _Heartbeat:
    """Beats for the trials being trained, so another worker can tell a dead one."""

    def __init__(self, study, trials, seconds: int):
        self.storage, self.ids = study._storage, [t._trial_id for t in trials]
        self.seconds, self.stop = seconds, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        # beat at once: Optuna only ever fails a trial that has beaten at least once
        beat = getattr(self.storage, "record_heartbeat", None)
        while beat:
            for i in self.ids:
                beat(i)
            if self.stop.wait(self.seconds):
                break

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()


def _train_size(spec: StudySpec, store, size: str, batch: list, quiet: bool) -> None:
    """Train every (trial, run spec) of `batch` at `size`; record each result on its trial."""
    from models.accounting import param_count
    from proxy_train.train import Member, model_config_for, train_population

    groups: dict = defaultdict(list)  # one population per shape, settings and length
    for trial, run in batch:
        cfg = model_config_for(run.model, store.vocab_size, run.train.seq_len, size)
        plan = run.schedule.plan(
            run.train.batch_size * run.train.seq_len,
            param_count(cfg).non_embedding,
            spec.max_tokens,
        )
        groups[(cfg, run.train, plan[-1].end_step)].append((trial, run))
    for (cfg, settings, _), members in groups.items():
        numbers = "-".join(str(t.number) for t, _ in members)
        pop = hashlib.sha1(f"{spec.name}/{numbers}".encode()).hexdigest()[:10]
        ms = [
            Member(
                f"trial-{t.number}",
                run.schedule,
                settings.seed + t.number,
                spec.out / f"trial-{t.number:04d}" / size,
            )
            for t, run in members
        ]
        summaries = train_population(
            store,
            cfg,
            settings,
            ms,
            spec.out / "populations" / f"{pop}-{size}",
            max_tokens=spec.max_tokens,
            progress=not quiet,
        )
        for (trial, _), s in zip(members, summaries, strict=True):
            keep = {
                k: s[k]
                for k in (
                    "status",
                    "reason",
                    "final",
                    "realised_mixture",
                    "epochs",
                    "stage_tokens",
                    "params",
                    "non_embedding_params",
                    "tokens",
                    "flops",
                    "wall_time_s",
                    "seed",
                )
            }
            keep["tokens_per_s"] = s["timing"].get("step_tokens_per_s")
            trial.set_user_attr(RESULT_ATTR + size, keep)


def run_batch(study, spec: StudySpec, store, trials: list, quiet: bool) -> None:
    from optuna.trial import TrialState

    batch, done = [], {}
    for t in trials:
        overrides = spec.suggest(t)
        t.set_user_attr("codemix/overrides", overrides)
        try:
            batch.append((t, spec.run_spec(overrides)))
        except CodemixError as e:  # a proposal that makes no valid run: a failed trial
            t.set_user_attr(REASON_ATTR, str(e))
            _tell(study, t, state=TrialState.FAIL)
    with _Heartbeat(study, [t for t, _ in batch], max(1, spec.heartbeat_seconds)):
        for k, size in enumerate(spec.sizes):
            if not batch:
                break
            _train_size(spec, store, size, batch, quiet)
            alive = []
            for t, run in batch:
                result = (
                    t.user_attrs.get(RESULT_ATTR + size)
                    or study._storage.get_trial(t._trial_id).user_attrs[RESULT_ATTR + size]
                )
                if result["status"] != "completed":
                    t.set_user_attr(REASON_ATTR, f"at {size}: {result['reason']}")
                    _tell(study, t, state=TrialState.FAIL)
                    continue
                values = spec.objective_value(result["final"])
                done[t.number] = values
                if len(values) == 1:
                    t.report(values[0], k)
                alive.append((t, run))
            batch = alive
            if spec.promotion == "halving" and k < len(spec.sizes) - 1 and len(batch) > 1:
                sign = 1 if spec.directions[0] == "minimize" else -1
                batch.sort(key=lambda tr: sign * done[tr[0].number][0])
                keep = max(1, math.ceil(spec.halving_keep * len(batch)))
                for t, _ in batch[keep:]:
                    t.set_user_attr("codemix/stopped_at", size)
                    _tell(study, t, state=TrialState.PRUNED)
                batch = batch[:keep]
    for t, _ in batch:
        _tell(study, t, values=done[t.number])


def worker(spec: StudySpec, url: str, n_trials: int, quiet: bool = False) -> None:
    """One worker's loop until the study has n_trials trials done or in flight."""
    grid = spec.grid()
    if grid and n_trials > math.prod(len(v) for v in grid.values()):
        raise CodemixError(
            f"{spec.path}: {n_trials} trials but the grid has only "
            f"{math.prod(len(v) for v in grid.values())} points"
        )
    import optuna
    from optuna.trial import TrialState

    from proxy_train.store import TokenStore
    from proxy_train.train import enable_compilation_cache, model_config_for, population_size

    # Optuna warns that heartbeats are meant for Study.optimize; codemix beats itself
    warnings.filterwarnings("ignore", message="Heartbeat of storage", category=UserWarning)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    store = TokenStore(spec.run_spec([]).store)
    check_objectives(spec, store.domains)
    study = open_study(spec, url)
    enable_compilation_cache()
    base = spec.run_spec([])
    cfg = model_config_for(base.model, store.vocab_size, base.train.seq_len, spec.sizes[-1])
    per_batch = spec.population or population_size(cfg, base.train.batch_size, n_trials)
    t0, trained = time.time(), 0
    while True:
        optuna.storages.fail_stale_trials(study)
        trials = []
        for _ in range(per_batch):
            if _counts(study)["budget"] >= n_trials:
                break
            t = study.ask()
            if hasattr(study._storage, "record_heartbeat"):  # stale-detectable from now on
                study._storage.record_heartbeat(t._trial_id)
            if _budget_before(study, t.number) > n_trials:  # another worker took the last
                t.set_user_attr(SURPLUS_ATTR, True)
                _tell(study, t, state=TrialState.FAIL)
                break
            trials.append(t)
        if not trials:
            break
        run_batch(study, spec, store, trials, quiet)
        trained += len(trials)
        _report(study, spec, n_trials, trained, time.time() - t0)


def _report(study, spec: StudySpec, n_trials: int, trained: int, elapsed: float) -> None:
    c = _counts(study)
    finished = c["complete"] + c["pruned"] + c["fail"]
    best = ""
    if len(spec.directions) == 1 and c["complete"]:
        bt = study.best_trial
        best = (
            f" | best {spec.objectives[0].metric if not spec.weighted else 'objective'} "
            f"{bt.value:.4f} (trial {bt.number})"
        )
    rate = elapsed / max(1, trained)
    eta = rate * max(0, n_trials - finished)
    print(
        f"[{spec.name}] trials {finished}/{n_trials} done ({c['complete']} complete, "
        f"{c['pruned']} pruned, {c['fail']} failed), {c['running']} running{best} | "
        f"{rate:.1f} s/trial here, ETA {eta / 60:.1f} min",
        flush=True,
    )


def run_study(
    spec: StudySpec, spec_args: list[str], url: str, n_trials: int | None, workers: int, quiet: bool
) -> None:
    """Start `workers` workers on one study (this process is one of them)."""
    n = n_trials or spec.n_trials
    open_study(spec, url)  # storage, name and space errors surface before any process starts
    procs = []
    for _ in range(workers - 1):
        cmd = [
            sys.executable,
            "-m",
            "codemix",
            "study",
            "run",
            *spec_args,
            "--storage",
            url,
            "--workers",
            "1",
            "--n-trials",
            str(n),
            "--quiet",
        ]
        procs.append(subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"}))
    try:
        worker(spec, url, n, quiet)
    finally:
        codes = [p.wait() for p in procs]
    if any(codes):
        raise CodemixError(
            f"{sum(1 for c in codes if c)} of {workers - 1} extra workers "
            "failed; run the same command again to finish the study"
        )
