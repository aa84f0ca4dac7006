"""One wave of a study: its trials trained as populations at every size of the ladder,
results recorded on each trial, Optuna told; successive halving between sizes."""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from pathlib import Path

from optuna.trial import TrialState

from codemix.core import interrupt
from codemix.core.errors import CodemixError
from codemix.core.results import STUDY_KEYS, RunSummary
from codemix.optimizer import branch
from codemix.optimizer.space import StudySpec
from codemix.optimizer.trials import (
    OVERRIDES_ATTR,
    REASON_ATTR,
    RESULT_ATTR,
    Heartbeat,
    label,
    root,
    seed_attr,
    set_back,
    tell,
)
from codemix.proxy_train import trunks


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
                _train_size(spec, store, size, batch, quiet, wave)
                alive = []
                for t, run in batch:
                    results = [t.user_attrs[seed_attr(size, k)] for k in range(spec.seeds)]
                    failed = [r for r in results if r["status"] != "completed"]
                    if failed:
                        t.set_user_attr(REASON_ATTR, f"at {size}: {failed[0]['reason']}")
                        close(t, state=TrialState.FAIL)
                        continue
                    values = [spec.objective_value(r["final"]) for r in results]
                    done[t.number] = [sum(v) / len(v) for v in zip(*values, strict=True)]
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
    """Train every run the (trial, run spec) pairs of `batch` need at `size` (each seed, the
    diagonal's from-scratch runs, the trunks they branch from); record each result on its
    trial."""
    from codemix.proxy_train.train import population_size

    k = spec.sizes.index(size)
    todo = [u for u in branch.units(spec, store, size, batch) if u.attr not in u.trial.user_attrs]
    if not quiet and any(u.chain for u in todo):
        print(branch.saving(spec, size, todo), flush=True)
    charged = branch.ensure_trunks(
        spec, store, size, todo, lambda job: train_job(spec, store, announce(job), quiet), quiet
    )
    owner: dict[str, branch.Unit] = {}  # each trunk trained here is charged to one run
    for u in todo:
        for key in u.chain:
            if key in charged:
                owner.setdefault(key, u)
    groups: dict = defaultdict(list)  # one population per shape, settings, length and start
    for u in todo:
        bad = [key for key in u.chain if not branch.completed(spec, key, size)]
        if bad:
            info = trunks.read(branch.folder(spec, bad[0], size))
            u.trial.set_user_attr(
                u.attr, {"status": "failed", "reason": f"its trunk {bad[0]}: {info.get('reason')}"}
            )
            continue
        groups[(u.cfg, u.run.train, u.total, u.start)].append(u)
    for (cfg, settings, _, _), units in groups.items():
        cap = spec.population or population_size(cfg, settings.batch_size, len(units))
        for i in range(0, len(units), cap):
            chunk = units[i : i + cap]
            numbers = sorted({root(u.trial) for u in chunk})
            scratch = sum(u.attr.endswith("/scratch") for u in chunk)
            how = (
                ""
                if not scratch
                else " from scratch (the diagonal check)"
                if scratch == len(chunk)
                else f" ({scratch} from scratch: the diagonal check)"
            )
            name = f"{wave}{label(numbers)}{how}, size {size} ({k + 1} of {len(spec.sizes)})"
            job = {
                "size": size,
                "label": name,
                "ckpt": str(_population_folder(spec, size, chunk)),
                "members": [
                    {
                        "name": u.name,
                        "overrides": u.trial.user_attrs[OVERRIDES_ATTR],
                        "seed": u.seed,
                        "out": str(u.out),
                        "trunk": str(branch.folder(spec, u.chain[-1], size)) if u.chain else None,
                    }
                    for u in chunk
                ],
            }
            summaries = train_job(spec, store, announce(job), quiet)
            for u, s in zip(chunk, summaries, strict=True):
                result = _result(s)
                result["flops_charged"] += sum(
                    charged[key] for key in u.chain if owner.get(key) is u
                )
                u.trial.set_user_attr(u.attr, result)


def _population_folder(spec: StudySpec, size: str, chunk: list) -> Path:
    """Where a population keeps its checkpoints: named by its members, so the same wave
    resumes from them (unbranched, one seed: by trial numbers, as before branching)."""
    if all(not u.chain and u.attr == RESULT_ATTR + size for u in chunk):
        names = "-".join(str(root(u.trial)) for u in chunk)
    else:
        names = "|".join(str(u.out) for u in chunk)
    key = hashlib.sha1(f"{spec.name}/{names}".encode()).hexdigest()
    return spec.out / "populations" / f"{key[:10]}-{size}"


def train_job(spec: StudySpec, store, job: dict, quiet: bool = True) -> list:
    """Train one population of a study: `job` names the size, the checkpoint folder and
    each member's run folder, seed, overrides and trunk (and `stop` for a population of
    trunks), so every process of a multi-host worker builds the same one."""
    from codemix.proxy_train.run import task_args
    from codemix.proxy_train.train import Member, model_config_for, train_population

    runs = [spec.run_spec(m["overrides"]) for m in job["members"]]
    cfg = model_config_for(runs[0].model, store.vocab_size, runs[0].train.seq_len, job["size"])
    members = [
        Member(
            m["name"],
            run.schedule,
            m["seed"],
            Path(m["out"]),
            run.code_domains,
            Path(m["trunk"]) if m["trunk"] else None,
        )
        for m, run in zip(job["members"], runs, strict=True)
    ]
    return train_population(
        store,
        cfg,
        runs[0].train,
        members,
        Path(job["ckpt"]),
        max_tokens=spec.max_tokens,
        progress=not quiet,
        label=job["label"],
        stop_step=job.get("stop"),
        **task_args(runs[0], store),
    )


def announce(job: dict | None) -> dict | None:
    """Multi-host: hand the job to the worker's other processes (see `follow`)."""
    from codemix.proxy_train.sharding import broadcast_json

    return broadcast_json(job)


def _result(s: RunSummary) -> dict:
    """What a trial keeps of a run's summary."""
    return {k: s[k] for k in STUDY_KEYS} | {"tokens_per_s": s["timing"].get("step_tokens_per_s")}
