"""One wave of a study: its trials trained as populations at every size of the ladder,
results recorded on each trial, Optuna told; successive halving between sizes."""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict

from optuna.trial import TrialState

from codemix.core import interrupt
from codemix.core.errors import CodemixError
from codemix.core.results import STUDY_KEYS, RunSummary
from codemix.optimizer.space import StudySpec
from codemix.optimizer.trials import (
    OVERRIDES_ATTR,
    REASON_ATTR,
    RESULT_ATTR,
    Heartbeat,
    label,
    root,
    set_back,
    tell,
)


def run_wave(study, spec: StudySpec, store, trials: list, quiet: bool, wave: str = "") -> None:
    """Train a wave of asked trials through the ladder and tell Optuna their results."""
    batch, done, open_ = [], {}, {t.number: t for t in trials}

    def close(t, **kw):
        tell(study, t, **kw)
        open_.pop(t.number, None)

    with Heartbeat(study, trials, max(1, spec.heartbeat_seconds)):
        try:
            for t in trials:
                overrides = spec.suggest(t)
                t.set_user_attr(OVERRIDES_ATTR, overrides)
                try:
                    batch.append((t, spec.run_spec(overrides)))
                except CodemixError as e:  # a proposal that makes no valid run: a failed trial
                    t.set_user_attr(REASON_ATTR, str(e))
                    close(t, state=TrialState.FAIL)
            for k, size in enumerate(spec.sizes):
                interrupt.check()
                todo = [(t, r) for t, r in batch if RESULT_ATTR + size not in t.user_attrs]
                if todo:
                    _train_size(spec, store, size, todo, quiet, wave)
                alive = []
                for t, run in batch:
                    result = t.user_attrs[RESULT_ATTR + size]
                    if result["status"] != "completed":
                        t.set_user_attr(REASON_ATTR, f"at {size}: {result['reason']}")
                        close(t, state=TrialState.FAIL)
                        continue
                    done[t.number] = spec.objective_value(result["final"])
                    if len(done[t.number]) == 1:
                        t.report(done[t.number][0], k)
                    alive.append((t, run))
                batch = alive
                if spec.promotion == "halving" and k < len(spec.sizes) - 1 and len(batch) > 1:
                    sign = 1 if spec.directions[0] == "minimize" else -1
                    batch.sort(key=lambda tr: sign * done[tr[0].number][0])
                    keep = max(1, math.ceil(spec.halving_keep * len(batch)))
                    for t, _ in batch[keep:]:
                        t.set_user_attr("codemix/stopped_at", size)
                        close(t, state=TrialState.PRUNED)
                    batch = batch[:keep]
            for t, _ in batch:
                close(t, values=done[t.number])
        except interrupt.Interrupted as e:
            set_back(study, list(open_.values()), e.signal)
            raise


def _train_size(spec: StudySpec, store, size: str, batch: list, quiet: bool, wave: str) -> None:
    """Train every (trial, run spec) of `batch` at `size`; record each result on its trial."""
    from codemix.models.accounting import param_count
    from codemix.proxy_train.train import model_config_for, population_size

    k = spec.sizes.index(size)
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
        cap = spec.population or population_size(cfg, settings.batch_size, len(members))
        for i in range(0, len(members), cap):
            chunk = members[i : i + cap]
            name = (
                f"{wave}{label([t.number for t, _ in chunk])}, size {size} "
                f"({k + 1} of {len(spec.sizes)})"
            )
            job = {
                "size": size,
                "label": name,
                "members": [[root(t), t.user_attrs[OVERRIDES_ATTR]] for t, _ in chunk],
            }
            summaries = train_job(spec, store, announce(job), quiet)
            for (trial, _), s in zip(chunk, summaries, strict=True):
                trial.set_user_attr(RESULT_ATTR + size, _result(s))


def train_job(spec: StudySpec, store, job: dict, quiet: bool = True) -> list:
    """Train one population of a study: `job` names the size and each member's run folder
    number and overrides, so every process of a multi-host worker builds the same one."""
    from codemix.proxy_train.run import task_args
    from codemix.proxy_train.train import Member, model_config_for, train_population

    size, roots = job["size"], [root for root, _ in job["members"]]
    runs = [spec.run_spec(overrides) for _, overrides in job["members"]]
    cfg = model_config_for(runs[0].model, store.vocab_size, runs[0].train.seq_len, size)
    key = hashlib.sha1(f"{spec.name}/{'-'.join(map(str, roots))}".encode()).hexdigest()
    members = [
        Member(
            f"trial-{r}",
            run.schedule,
            run.train.seed + r,
            spec.out / f"trial-{r:04d}" / size,
            run.code_domains,
        )
        for r, run in zip(roots, runs, strict=True)
    ]
    return train_population(
        store,
        cfg,
        runs[0].train,
        members,
        spec.out / "populations" / f"{key[:10]}-{size}",
        max_tokens=spec.max_tokens,
        progress=not quiet,
        label=job["label"],
        **task_args(runs[0], store),
    )


def announce(job: dict | None) -> dict | None:
    """Multi-host: hand the job to the worker's other processes (see `follow`)."""
    from codemix.proxy_train.sharding import broadcast_json

    return broadcast_json(job)


def _result(s: RunSummary) -> dict:
    """What a trial keeps of a run's summary."""
    return {k: s[k] for k in STUDY_KEYS} | {"tokens_per_s": s["timing"].get("step_tokens_per_s")}
