"""Branched studies: trials that share their first stages (the same model, settings, seed,
store and stages up to a boundary) train those stages once, as a trunk, and go on from its
state (`proxy_train/trunks.py`); a run branched from a trunk is the run from scratch.

A boundary is the start of a stage the search changes, after the first, with only discrete
choices (values, choices, schedules) before it: where trials can meet. In an init ->
continual -> cooldown study that searches the cooldown, all trials of one seed share init
and continual; searching the init mixture over three values as well gives three trunks.
Inside a WSD stage whose decay share is searched over values, the stable phases the values
give are cuts too: each decay branches from the stable trunk at its own step.

Trunks are named by a hash of everything that decides them and live in the study's
`trunks/` folder, so waves, workers and resumed runs share them and none is trained twice:
a worker trains a trunk under its folder's lock, others wait for it, and a worker that
dies leaves the trunk's population checkpoint, which the next worker resumes.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from codemix.core import interrupt
from codemix.core.errors import CodemixError
from codemix.core.lock import folder_lock
from codemix.optimizer.space import StudySpec
from codemix.optimizer.trials import label, root, seed_attr
from codemix.proxy_train import trunks
from codemix.proxy_train.spec import RunSpec

_DISCRETE = ("values", "choices", "schedules")


@dataclass(frozen=True)
class Unit:
    """One run a trial needs at one size: a seed replicate, or the diagonal's run from
    scratch. `chain` names its trunks, shallowest first; `stops` their last steps."""

    trial: Any
    run: RunSpec
    attr: str  # the trial's user attribute that keeps the result
    name: str
    seed: int
    out: Path
    cfg: Any
    total: int  # steps of the whole schedule
    chain: tuple[str, ...] = ()
    stops: tuple[int, ...] = ()
    parts: tuple[str, ...] = ()  # what each trunk trains ("init+continual", "main[:80]")

    @property
    def start(self) -> int:
        return self.stops[-1] if self.stops else 0


def _searched_stages(spec: StudySpec, names: list[str]) -> dict[int, bool] | None:
    """Stage index -> whether only discrete values search it; None when the search touches
    a setting outside the stages (the model, the learning rate, the groups), which every
    stage depends on."""
    out: dict[int, bool] = {}
    for p in spec.params:
        keys = [k for v in p.choices.values() for k in v] if p.kind == "schedules" else [p.key]
        for key in keys:
            part = key.split(".")
            if part[0] != "stages" or len(part) < 3:
                return None
            i = _stage_index(part[1], names)
            out[i] = out.get(i, True) and p.kind in _DISCRETE
    return out


def _stage_index(name: str, names: list[str]) -> int:
    """A stage as a --set key names it (`stages.cooldown.…` or `stages.2.…`)."""
    return int(name) if name.isdigit() else names.index(name)


def boundaries(spec: StudySpec, run: RunSpec) -> list[int]:
    """Stage indices j at which trials can branch (the trunk is stages[:j])."""
    names = [s.name for s in run.schedule.stages]
    searched = _searched_stages(spec, names)
    if not spec.branch or searched is None:
        return []
    return [j for j in sorted(searched) if j > 0 and all(searched.get(i, True) for i in range(j))]


_DECAY_ONLY = ("decay", "decay_shape", "end", "end_lr")  # a WSD stage's after its stable phase


@dataclass(frozen=True)
class Cut:
    """Where a trunk ends: after `stages` whole stages, `into` steps into the next one (its
    stable phase: a WSD stage whose decay share the search changes), at step `stop`."""

    stages: int
    into: int
    stop: int


def cuts(spec: StudySpec, run: RunSpec, plans) -> list[Cut]:
    """The trunks a run of this study goes through, shallowest first: stage boundaries, and
    inside a WSD stage the ends of the stable phases its searched decay shares give."""
    starts = boundaries(spec, run)
    out = [Cut(j, 0, plans[j - 1].end_step) for j in starts if j < len(plans)]
    names = [st.name for st in run.schedule.stages]
    for j, shares in _decay_values(spec, names).items():
        stage, plan = plans[j].stage, plans[j]
        # the stages before must be shared too: the first, or one trials can branch before
        if not spec.branch or stage.lr.shape != "wsd" or j not in [0, *starts]:
            continue
        n = plan.n_steps
        own = math.ceil(stage.lr.decay_start(n))
        ends = {math.ceil(replace(stage.lr, decay=v).decay_start(n)) for v in shares}
        for k in sorted(ends):  # the longest stable phase branches from no one's end
            if 0 < k <= own and k < max(ends):
                out.append(Cut(j, k, plan.first_step + k))
    return sorted(out, key=lambda c: c.stop)


def _decay_values(spec: StudySpec, names: list[str]) -> dict[int, set[float]]:
    """Stage index -> the decay shares the search gives its `lr.decay` (discrete only)."""
    out: dict[int, set[float]] = {}
    for p in spec.params:
        if p.kind == "values":
            pairs = [(p.key, v) for v in p.values]
        elif p.kind == "choices":
            pairs = [(p.key, v) for v in p.choices.values()]
        elif p.kind == "schedules":
            pairs = [kv for sched in p.choices.values() for kv in sched.items()]
        else:
            continue
        for key, v in pairs:
            part = key.split(".")
            if part[0] == "stages" and part[2:] == ["lr", "decay"]:
                out.setdefault(_stage_index(part[1], names), set()).add(float(v))
    return out


def trunk_key(unit_run: RunSpec, cfg, size: str, plans, cut: Cut, seed: int, store: str) -> str:
    """The name of the trunk that ends at `cut`: a hash of all that decides it."""
    stages = [
        {"stage": asdict(p.stage), "first": p.first_step, "steps": p.n_steps}
        for p in plans[: cut.stages]
    ]
    if cut.into:  # the stable part of the next stage: all of it but what only its decay uses
        p = plans[cut.stages]
        stage = asdict(p.stage)
        stage["lr"] = {k: v for k, v in stage["lr"].items() if k not in _DECAY_ONLY}
        stages.append({"stage": stage, "first": p.first_step, "steps": p.n_steps, "into": cut.into})
    identity = {
        "model": asdict(cfg),
        "train": asdict(unit_run.train),
        "evals": asdict(unit_run.evals) if unit_run.evals else None,
        "size": size,
        "seed": seed,
        "store": store,
        "stages": stages,
    }
    if unit_run.train.unique_tokens:  # capped samples were a prefix before: not those trunks
        identity["cap"] = "spread"
    if unit_run.train.unique_share is None:  # trunks trained before the setting keep their name
        del identity["train"]["unique_share"]
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _describe(run: RunSpec, cut: Cut) -> str:
    """'init+continual', or 'main[:80]' for the first 80 steps of stage main."""
    names = [st.name for st in run.schedule.stages]
    whole = names[: cut.stages] + ([f"{names[cut.stages]}[:{cut.into}]"] if cut.into else [])
    return "+".join(whole)


def folder(spec: StudySpec, key: str, size: str) -> Path:
    return spec.out / "trunks" / f"{key}-{size}"


def units(spec: StudySpec, store, size: str, batch: list) -> list[Unit]:
    """Every run the (trial, run spec) pairs of `batch` need at `size`, with their trunks."""
    from codemix.models.accounting import param_count
    from codemix.optimizer.study import store_fingerprint
    from codemix.optimizer.trials import RESULT_ATTR
    from codemix.proxy_train.train import model_config_for

    fingerprint = store_fingerprint(store.manifest)
    out = []
    for trial, run in batch:
        r = root(trial)
        cfg = model_config_for(run.model, store.vocab_size, run.train.seq_len, size)
        tokens_per_step = run.train.batch_size * run.train.seq_len
        plans = run.schedule.plan(tokens_per_step, param_count(cfg).non_embedding, spec.max_tokens)
        trunk_cuts = cuts(spec, run, plans)
        folder_ = spec.out / f"trial-{r:04d}"
        for k in range(spec.seeds):
            seed = spec.member_seed(run.train.seed, r, k)
            chain = tuple(
                trunk_key(run, cfg, size, plans, c, seed, fingerprint) for c in trunk_cuts
            )
            stops = tuple(c.stop for c in trunk_cuts)
            attr = seed_attr(size, k)
            where = folder_ / (size + (f"-seed-{k}" if k else ""))
            out.append(
                Unit(
                    trial,
                    run,
                    attr,
                    f"trial-{r}" + (f"-seed-{k}" if k else ""),
                    seed,
                    where,
                    cfg,
                    plans[-1].end_step,
                    chain,
                    stops,
                    tuple(_describe(run, c) for c in trunk_cuts),
                )
            )
            if k == 0 and chain and r < spec.diagonal:  # the diagonal: also from scratch
                scratch = folder_ / f"{size}-scratch"
                out.append(
                    Unit(
                        trial,
                        run,
                        RESULT_ATTR + size + "/scratch",
                        f"trial-{r}-scratch",
                        seed,
                        scratch,
                        cfg,
                        plans[-1].end_step,
                    )
                )
    return out


def saving(spec: StudySpec, size: str, todo: list[Unit]) -> str:
    """What branching saves at one size, in steps (FLOPs in proportion: one shape a size)."""
    whole = sum(u.total for u in todo)
    trunk_steps = {}
    for u in todo:
        for d, key in enumerate(u.chain):
            if not completed(spec, key, size):
                trunk_steps[key] = u.stops[d] - (u.stops[d - 1] if d else 0)
    steps = sum(trunk_steps.values()) + sum(u.total - u.start for u in todo)
    return (
        f"size {size}: {len(todo)} runs branch from {len({u.chain[-1] for u in todo if u.chain})} "
        f"trunks ({len(trunk_steps)} to train): {steps:,} steps instead of {whole:,} "
        f"({steps / whole:.0%})"
    )


def ensure_trunks(spec: StudySpec, store, size: str, todo: list[Unit], train, quiet: bool) -> dict:
    """Train the trunks `todo` needs and no one has, depth by depth; return {key: FLOPs} of
    the trunks trained here. `train(job)` trains one population job (see wave.train_job)."""
    charged: dict[str, int] = {}
    depth = max((len(u.chain) for u in todo), default=0)
    for d in range(depth):
        needed: dict[str, Unit] = {}
        users: dict[str, set[int]] = defaultdict(set)  # trunk -> the trials that need it
        for u in todo:
            if len(u.chain) > d and (d == 0 or completed(spec, u.chain[d - 1], size)):
                needed.setdefault(u.chain[d], u)
                users[u.chain[d]].add(root(u.trial))
        charged |= _ensure_level(spec, size, d, needed, users, train, quiet)
    return charged


def completed(spec: StudySpec, key: str, size: str) -> bool:
    return trunks.completed(folder(spec, key, size))


def _ensure_level(spec, size: str, d: int, needed: dict, users, train, quiet: bool) -> dict:
    charged: dict[str, int] = {}
    waited = False
    while True:
        pending = {k: u for k, u in needed.items() if not trunks.finished(folder(spec, k, size))}
        if not pending:
            return charged
        with ExitStack() as stack:
            mine = {}
            for k, u in pending.items():
                try:
                    stack.enter_context(folder_lock(folder(spec, k, size), "trunk"))
                except CodemixError:
                    continue  # another worker trains it: wait below
                if not trunks.finished(folder(spec, k, size)):  # finished while we looked
                    mine[k] = u
            # a trunk completed once and restored (its state deleted) was charged then
            again = {
                k for k in mine if trunks.read(folder(spec, k, size)).get("status") == "completed"
            }
            for job in _jobs(spec, size, d, mine, users):
                train(job)
                for m in job["members"]:
                    info = trunks.read(Path(m["out"]))
                    charged[m["name"]] = 0 if m["name"] in again else int(info.get("flops", 0))
            if len(mine) == len(pending):
                continue
        if not waited and not quiet:
            print(f"waiting for trunks another worker trains ({len(pending) - len(mine)})")
        waited = True
        for _ in range(20):
            interrupt.check()
            time.sleep(0.1)


def _jobs(spec: StudySpec, size: str, d: int, mine: dict[str, Unit], users) -> list[dict]:
    """Population jobs that train the trunks `mine` (depth d): first the unfinished
    populations of a worker that stopped, whose members are all here, then the rest in
    groups of one shape, settings, length and start."""
    jobs, left = [], dict(mine)
    for members_file in sorted(
        (spec.out / "trunks" / "populations").glob(f"*-{size}/members.json")
    ):
        keys = json.loads(members_file.read_text())
        if keys and set(keys) <= set(left):
            jobs.append(_job(spec, size, d, users, [(k, left.pop(k)) for k in keys]))
    groups: dict = defaultdict(list)
    for k, u in left.items():
        groups[(u.cfg, u.run.train, u.total, u.stops[d], u.stops[d - 1] if d else 0)].append((k, u))
    for members in groups.values():
        cap = spec.population or _fit(members[0][1])
        for i in range(0, len(members), cap):
            jobs.append(_job(spec, size, d, users, members[i : i + cap]))
    return jobs


def _fit(u: Unit) -> int:
    from codemix.proxy_train.train import population_size

    return population_size(u.cfg, u.run.train.batch_size, 10**6)


def _job(spec: StudySpec, size: str, d: int, users, members: list[tuple[str, Unit]]) -> dict:
    keys = [k for k, _ in members]
    name = hashlib.sha1("-".join(sorted(keys)).encode()).hexdigest()[:10]
    ckpt = spec.out / "trunks" / "populations" / f"{name}-{size}"
    ckpt.mkdir(parents=True, exist_ok=True)
    (ckpt / "members.json").write_text(json.dumps(keys))
    for k, u in members:
        trunks.write(
            folder(spec, k, size),
            identity={"size": size, "trains": u.parts[d], "seed": u.seed, "first_trial": u.name},
        )
    _, u0 = members[0]
    numbers = sorted(set().union(*(users[k] for k in keys)))
    stages = u0.parts[d]
    return {
        "size": size,
        "label": f"{len(keys)} trunk{'s' if len(keys) > 1 else ''} ({stages}) for "
        f"{label(numbers)}, size {size}",
        "ckpt": str(ckpt),
        "stop": u0.stops[d],
        "members": [
            {
                "name": k,
                "overrides": u.trial.user_attrs.get("codemix/overrides", []),
                "seed": u.seed,
                "out": str(folder(spec, k, size)),
                "trunk": str(folder(spec, u.chain[d - 1], size)) if d else None,
            }
            for k, u in members
        ],
    }
