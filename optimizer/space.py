"""Study specs: a run spec (see `proxy_train/spec.py`) plus [study], [search] and
[[objectives]] tables.

    [study]
    name = "code-share"; sampler = "tpe"; n_trials = 24; sizes = ["0.5M", "1M"]
    [search]
    "stages.init.code_frac" = { low = 0.0, high = 1.0 }                  # a float range
    "stages.init.code_frac" = { values = [0.0, 0.25, 0.5] }              # a list (grid-able)
    "stages.init.code_frac" = { choices = { text = 0.0, balanced = 0.5 } }   # named values
    "groups.code" = { simplex = ["web", "hq"] }                          # shares in a group
    "schedule" = { schedules = { a = { "stages.init.code_frac" = 0.1 }, b = {...} } }
                                         # named sets of values (`codemix confirm` writes them)
    [[objectives]]
    metric = "bpb.text"; direction = "minimize"        # several: a Pareto front
    # weight = 0.7 on every objective: one weighted sum instead

Search keys are the `--set` paths of the run spec, so anything can be searched or fixed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codemix.core.errors import CodemixError
from codemix.core.results import METRIC_KINDS
from codemix.optimizer.samplers import SAMPLERS
from codemix.proxy_train.spec import RunSpec, apply_overrides, build_spec, read_toml

_STUDY_KEYS = {
    "name": str,
    "sampler": str,
    "n_trials": int,
    "sizes": list,
    "promotion": str,
    "halving_keep": float,
    "population": int,
    "start_trials": int,
    "wave_size": int,
    "seed": int,
    "max_tokens": (str, int, float),
    "heartbeat_seconds": int,
    "grace_seconds": int,
    "max_retries": int,
    "out": str,
    "seeding": str,
    "seeds": int,
    "branch": bool,
    "diagonal": int,
    "control": str,
}
SEEDINGS = ("paired", "per-trial")


@dataclass(frozen=True)
class Param:
    key: str  # a --set path, or a group for a simplex
    kind: str  # float | values | choices | simplex | schedules
    low: float = 0.0
    high: float = 1.0
    log: bool = False
    values: tuple = ()
    choices: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str = "minimize"
    weight: float | None = None


@dataclass(frozen=True)
class StudySpec:
    path: Path
    raw: dict
    name: str
    sampler: str = "tpe"
    n_trials: int = 12
    sizes: tuple[str, ...] = ("1M",)
    promotion: str = "all"  # every trial at every size, or "halving"
    halving_keep: float = 0.5
    population: int = 0  # the most trials trained at once; 0: as many as fit the device
    start_trials: int = 0  # space-filling first wave; 0: search dimensions + 1, at least 4
    wave_size: int = 0  # trials asked together after the start; 0: a sixteenth of the rest
    seed: int = 0  # the sampler's; the models' is [train] seed
    max_tokens: float | None = None
    heartbeat_seconds: int = 30
    grace_seconds: int = 120
    max_retries: int = 2
    out: Path = Path("runs")
    # paired: every trial starts from the same initialisation and data order (common random
    # numbers: a difference between two trials is the mixtures', not the seeds'), which
    # branching needs; per-trial: seed + trial number, as studies before 0.9 did
    seeding: str = "paired"
    seeds: int = 1  # replicates of every trial: model seeds train.seed ... + seeds - 1
    branch: bool = True  # trials that share their first stages branch from one trunk
    diagonal: int = 0  # trials 0 .. diagonal - 1 also train from scratch, to check branching
    control: str = ""  # a named choice every other is measured against (vs_control.* columns)
    params: tuple[Param, ...] = ()
    objectives: tuple[Objective, ...] = ()

    @property
    def directions(self) -> list[str]:
        if self.weighted:
            return [self.objectives[0].direction]
        return [o.direction for o in self.objectives]

    @property
    def weighted(self) -> bool:
        return any(o.weight is not None for o in self.objectives)

    def space_json(self) -> str:
        """What a study with this name must keep: its search space and objectives."""
        return json.dumps(
            {
                "params": [p.__dict__ for p in self.params],
                "objectives": [o.__dict__ for o in self.objectives],
            },
            sort_keys=True,
            default=str,
        )

    def grid(self) -> dict[str, list] | None:
        if self.sampler != "grid":
            return None
        grid = {}
        for p in self.params:
            if p.kind == "values":
                grid[p.key] = list(p.values)
            elif p.kind in ("choices", "schedules"):
                grid[p.key] = list(p.choices)
            else:
                raise CodemixError(
                    f"{self.path}: sampler 'grid' needs values or choices for every search "
                    f"key; {p.key!r} is a {p.kind}"
                )
        return grid

    def distributions(self) -> dict:
        """Optuna's name and distribution of every value a trial is asked for."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution

        out: dict = {}
        for p in self.params:
            if p.kind == "float":
                out[p.key] = FloatDistribution(p.low, p.high, log=p.log)
            elif p.kind == "values":
                out[p.key] = CategoricalDistribution(list(p.values))
            elif p.kind in ("choices", "schedules"):
                out[p.key] = CategoricalDistribution(list(p.choices))
            else:  # simplex: one draw per domain, normalised into shares
                out |= {f"{p.key}.{d}": FloatDistribution(1e-6, 1.0) for d in p.values}
        return out

    def suggest(self, trial) -> list[str]:
        """Ask the trial for every parameter; return the run spec overrides it implies."""
        from optuna.distributions import FloatDistribution

        drawn = {}
        for k, d in self.distributions().items():
            if isinstance(d, FloatDistribution):
                drawn[k] = trial.suggest_float(k, d.low, d.high, log=d.log)
            else:
                drawn[k] = trial.suggest_categorical(k, d.choices)
        return self.overrides(drawn)

    def overrides(self, drawn: dict) -> list[str]:
        """The run spec overrides of one trial's parameters (as Optuna stores them)."""
        out = []
        for p in self.params:
            if p.kind == "simplex":  # independent draws, then shares (Dirichlet-like)
                raw = [drawn[f"{p.key}.{d}"] for d in p.values]
                out += [f"{p.key}.{d}={x / sum(raw)!r}" for d, x in zip(p.values, raw, strict=True)]
                continue
            if p.kind == "schedules":  # a named set of values, each at its own path
                out += [f"{k}={json.dumps(v)}" for k, v in p.choices[drawn[p.key]].items()]
                continue
            v = p.choices[drawn[p.key]] if p.kind == "choices" else drawn[p.key]
            out.append(f"{p.key}={json.dumps(v)}")
        return out

    def waves(self, n_trials: int) -> tuple[int, int]:
        """(start, wave): trials in the space-filling first wave, then in each later one."""
        return wave_plan(
            self.sampler, n_trials, len(self.distributions()), self.start_trials, self.wave_size
        )

    def metric_names(self) -> list[str]:
        if self.weighted:
            return [" + ".join(f"{o.weight}*{o.metric}" for o in self.objectives)]
        return [o.metric for o in self.objectives]

    def trained_identity(self) -> dict:
        """Every setting that changes what a trial trains, as flat dotted keys: a study may
        not change them once it has trials (the store enters through its fingerprint)."""
        raw = {k: v for k, v in self.raw.items() if k not in ("study", "search", "objectives")}
        raw = {**raw, "data": {k: v for k, v in raw.get("data", {}).items() if k != "store"}}
        study = {k: getattr(self, k) for k in ("sizes", "max_tokens", "seed", "promotion")}
        if self.promotion == "halving":
            study["halving_keep"] = self.halving_keep
        if self.seeding != "per-trial":  # absent from the studies made before it existed
            study["seeding"] = self.seeding
        if self.seeds != 1:
            study["seeds"] = self.seeds
        return _flatten({**raw, "study": study})

    def control_param(self) -> str | None:
        """The search key whose named choices hold the control, if the study has one."""
        keys = [p.key for p in self.params if self.control and self.control in p.choices]
        return keys[0] if keys else None

    def member_seed(self, base: int, trial: int, k: int) -> int:
        """The seed of replicate k of a trial (its first trial's number)."""
        return base + k if self.seeding == "paired" else base + trial + 1_000_003 * k

    def run_spec(self, overrides: list[str]) -> RunSpec:
        raw = {k: v for k, v in self.raw.items() if k not in ("study", "search", "objectives")}
        return build_spec(apply_overrides(raw, overrides), str(self.path), self.path)

    def objective_value(self, final: dict) -> list[float]:
        values = [metric_value(final, o.metric) for o in self.objectives]
        if self.weighted:
            sign = {self.objectives[0].direction: 1.0}
            return [
                sum(
                    (o.weight or 0.0) * sign.get(o.direction, -1.0) * v
                    for o, v in zip(self.objectives, values, strict=True)
                )
            ]
        return values


def wave_plan(
    sampler: str, n_trials: int, dims: int, start_trials: int = 0, wave_size: int = 0
) -> tuple[int, int]:
    """(start, wave): how many trials a study asks before any result, then at a time.

    Samplers that learn from results (tpe, gp, nsga2) are asked in waves so that they see
    results often: a space-filling start of one trial per search dimension plus one (at
    least 4), then waves of a sixteenth of the rest (at least 2). On a known mixture law
    (`benchmarks/study_efficiency.py`), TPE needed 30 trials to come within 1 % of the
    loss range with waves of 2, 36 with waves of 7 and 43 with waves of 12, against 27
    asked one at a time; a larger start only delayed it. Samplers that do not learn are
    asked all at once: the device trains what fits."""
    from codemix.optimizer.samplers import LEARNING

    if sampler not in LEARNING:
        return n_trials, n_trials
    start = min(n_trials, start_trials or max(4, dims + 1))
    wave = wave_size or max(2, math.ceil((n_trials - start) / 16))
    return start, wave


def _flatten(tree, prefix: str = "") -> dict:
    """{"a": {"b": 1}, "s": [{"x": 2}]} -> {"a.b": 1, "s.0.x": 2}, for naming what differs."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list | tuple) and any(isinstance(x, dict | list) for x in tree):
        # stages by name, as --set addresses them
        items = (
            (x.get("name", str(i)) if isinstance(x, dict) else str(i), x)
            for i, x in enumerate(tree)
        )
    else:
        return {prefix: list(tree) if isinstance(tree, tuple) else tree}
    out: dict = {}
    for k, v in items:
        out |= _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    return out


def metric_value(final: dict, metric: str) -> float:
    """`bpb.text` -> final["bpb"]["text"]; `task.nl_reasoning.acc` -> its task metric."""
    kind, _, rest = metric.partition(".")
    if kind == "task":
        name, _, what = rest.partition(".")
        value = (final.get("task") or {}).get(name, {}).get(what)
        return float("nan") if value is None else float(value)
    return float(final[kind][rest])


def _param(key: str, table: Any, where: str) -> Param:
    at = f"{where}: [search] {key!r}"
    if not isinstance(table, dict):
        raise CodemixError(f"{at}: expected a table such as {{ low = 0.0, high = 1.0 }}")
    if "simplex" in table:
        domains = table["simplex"]
        if not isinstance(domains, list) or len(domains) < 2:
            raise CodemixError(f"{at}: simplex needs a list of two or more domains")
        return Param(key, "simplex", values=tuple(map(str, domains)))
    if "values" in table:
        if not isinstance(table["values"], list) or not table["values"]:
            raise CodemixError(f"{at}: values must be a non-empty list")
        return Param(key, "values", values=tuple(table["values"]))
    if "schedules" in table:
        named = table["schedules"]
        if not isinstance(named, dict) or not named:
            raise CodemixError(f"{at}: schedules must map names to tables of settings")
        for name, values in named.items():
            if not isinstance(values, dict) or not values:
                raise CodemixError(
                    f"{at}: schedule {name!r} must be a table of settings, e.g. "
                    '{ "stages.init.code_frac" = 0.25 }'
                )
        return Param(key, "schedules", choices={n: dict(v) for n, v in named.items()})
    if "choices" in table:
        if not isinstance(table["choices"], dict) or not table["choices"]:
            raise CodemixError(f"{at}: choices must map names to values")
        return Param(key, "choices", choices=dict(table["choices"]))
    if "low" in table and "high" in table:
        low, high = table["low"], table["high"]
        if not all(isinstance(x, int | float) for x in (low, high)) or not low < high:
            raise CodemixError(f"{at}: needs numbers low < high, got {low!r}, {high!r}")
        return Param(key, "float", float(low), float(high), bool(table.get("log", False)))
    raise CodemixError(f"{at}: give low/high, values, choices or simplex")


def load_study(path: str | Path, overrides: list[str] | None = None) -> StudySpec:
    path = Path(path)
    raw = read_toml(path, overrides, "study spec")
    where = str(path)
    study = raw.get("study")
    if not isinstance(study, dict) or "name" not in study:
        raise CodemixError(f"{where}: missing [study] with name = '...'")
    kwargs: dict[str, Any] = {}
    for key, value in study.items():
        if key not in _STUDY_KEYS:
            raise CodemixError(
                f"{where}: unknown key [study].{key}; known: {', '.join(_STUDY_KEYS)}"
            )
        if not isinstance(value, _STUDY_KEYS[key]) or isinstance(value, bool) != (key == "branch"):
            raise CodemixError(f"{where}: [study].{key} = {value!r} has the wrong type")
        kwargs[key] = value
    if kwargs.get("sampler", "tpe") not in SAMPLERS:
        raise CodemixError(
            f"{where}: [study].sampler {kwargs['sampler']!r}: expected one of {', '.join(SAMPLERS)}"
        )
    if kwargs.get("promotion", "all") not in ("all", "halving"):
        raise CodemixError(f"{where}: [study].promotion: expected 'all' or 'halving'")
    if kwargs.get("seeding", "paired") not in SEEDINGS:
        raise CodemixError(f"{where}: [study].seeding: expected one of {', '.join(SEEDINGS)}")
    if kwargs.get("seeds", 1) < 1 or kwargs.get("diagonal", 0) < 0:
        raise CodemixError(f"{where}: [study].seeds must be >= 1 and [study].diagonal >= 0")
    if kwargs.get("seeding") == "per-trial" and kwargs.get("branch"):
        raise CodemixError(
            f"{where}: [study].branch = true needs seeding = 'paired': trials with seeds of "
            "their own share no trunk"
        )
    if kwargs.get("seeding") == "per-trial":
        kwargs["branch"] = False
    if kwargs.get("n_trials", 1) < 1:
        raise CodemixError(f"{where}: [study].n_trials must be >= 1")
    if "sizes" in kwargs:
        if not kwargs["sizes"]:
            raise CodemixError(f"{where}: [study].sizes must name at least one preset")
        kwargs["sizes"] = tuple(map(str, kwargs["sizes"]))
    if "max_tokens" in kwargs:
        from codemix.core.units import parse_count

        kwargs["max_tokens"] = parse_count(kwargs["max_tokens"], f"{where}: max_tokens")
    kwargs["out"] = Path(kwargs.get("out", Path("runs") / kwargs["name"]))
    search = raw.get("search", {})
    if not isinstance(search, dict) or not search:
        raise CodemixError(
            f"{where}: the search space is empty; add a [search] table "
            '(e.g. "stages.init.code_frac" = { low = 0.0, high = 1.0 })'
        )
    params = tuple(_param(k, v, where) for k, v in search.items())
    if kwargs.get("sampler") == "grid" and "n_trials" not in kwargs:
        # a grid study without n_trials trains its whole grid, not the default 12 points of it
        sizes = [len(p.values or p.choices) for p in params if p.values or p.choices]
        if len(sizes) == len(params):
            kwargs["n_trials"] = math.prod(sizes)
    objectives = raw.get("objectives")
    if not isinstance(objectives, list) or not objectives:
        raise CodemixError(f"{where}: no [[objectives]]; e.g. metric = 'bpb.text'")
    objs = []
    for o in objectives:
        if not isinstance(o, dict) or "metric" not in o:
            raise CodemixError(f"{where}: every [[objectives]] needs metric = 'KIND.DOMAIN'")
        if o.get("direction", "minimize") not in ("minimize", "maximize"):
            raise CodemixError(
                f"{where}: objective {o['metric']!r}: direction must be minimize or maximize"
            )
        objs.append(Objective(o["metric"], o.get("direction", "minimize"), o.get("weight")))
    spec = StudySpec(path=path, raw=raw, params=params, objectives=tuple(objs), **kwargs)
    if spec.control and spec.control_param() is None:
        raise CodemixError(
            f"{where}: [study].control = {spec.control!r} names no choice or schedule of "
            '[search]; add it, e.g. "schedule" = { schedules = { '
            f"{spec.control} = {{ ... }}, ... }} }}"
        )
    if spec.control and spec.sampler != "grid":
        raise CodemixError(
            f"{where}: [study].control needs sampler = 'grid', so that the control branch "
            "is always trained"
        )
    # sample one point of the space now, so a space that cannot make a valid run fails here
    spec.grid()
    base = spec.run_spec([])
    for o in objs:
        _check_objective(o.metric, base, where)
    for p in params:  # every named schedule, and each end or value of a key, makes a valid run
        for name, values in p.choices.items() if p.kind == "schedules" else ():
            try:
                spec.run_spec([f"{k}={json.dumps(v)}" for k, v in values.items()])
            except CodemixError as e:
                raise CodemixError(f"[search] {p.key!r} schedule {name!r}: {e}") from None
        for shown, overrides in _points(p):
            try:
                spec.run_spec(overrides)
            except CodemixError as e:
                why = str(e).removeprefix(f"{where}: ")
                raise CodemixError(f"{where}: [search] {p.key!r} at {shown}: {why}") from None
    return spec


def _points(p: Param) -> list[tuple[str, list[str]]]:
    """(what to call it, overrides) for the ends of a range and each value or choice, so a
    key that names no setting, or a value no run accepts, fails before any trial."""
    if p.kind == "float":
        return [(f"{x:g}", [f"{p.key}={x!r}"]) for x in (p.low, p.high)]
    if p.kind == "values":
        return [(json.dumps(v), [f"{p.key}={json.dumps(v)}"]) for v in p.values]
    if p.kind == "choices":
        return [(repr(n), [f"{p.key}={json.dumps(v)}"]) for n, v in p.choices.items()]
    if p.kind == "simplex":
        share = 1 / len(p.values)
        return [("equal shares", [f"{p.key}.{d}={share!r}" for d in p.values])]
    return []


def _check_objective(metric: str, run: RunSpec, where: str) -> None:
    """KIND.DOMAIN (loss, bpb), or task.NAME.METRIC for a task or family of [evals]."""
    kind, _, rest = metric.partition(".")
    if kind == "task":
        from codemix.proxy_train.task_eval import METRICS
        from codemix.proxy_train.tasks import TASKS, has_choices

        name, _, what = rest.partition(".")
        if run.evals is None:
            raise CodemixError(f"{where}: objective {metric!r} needs an [evals] table")
        names = run.evals.tasks + sorted({TASKS[t].family for t in run.evals.tasks} - {"stand_in"})
        if name not in names or what not in METRICS:
            raise CodemixError(
                f"{where}: objective {metric!r}: expected task.NAME.METRIC with NAME one of "
                f"{', '.join(names)} and METRIC one of {', '.join(METRICS)}"
            )
        if what not in ("bpb", "correct_prob") and not has_choices(name):
            raise CodemixError(
                f"{where}: objective {metric!r}: {name} scores one reference answer, so it "
                "reports bpb and correct_prob only"
            )
        return
    if kind not in METRIC_KINDS or not rest:
        raise CodemixError(
            f"{where}: objective {metric!r}: no run reports it; runs report "
            f"{', '.join(k + '.DOMAIN' for k in METRIC_KINDS)}, and task.NAME.METRIC with [evals]"
        )


def check_objectives(spec: StudySpec, store_domains: tuple[str, ...]) -> None:
    for o in spec.objectives:
        kind, _, domain = o.metric.partition(".")
        if kind != "task" and domain not in store_domains:
            raise CodemixError(
                f"{spec.path}: objective {o.metric!r}: no run reports it; the token store's "
                f"domains are {', '.join(store_domains)}"
            )
