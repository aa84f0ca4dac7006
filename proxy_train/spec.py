"""Run specs: one TOML file gives the token store, the model, the training settings and
the stages. Studies add their own tables to the same file (see `optimizer/`).

    [data]   store = "runs/demo/store"
    [model]  size = "1M"                       # a preset; any ModelConfig field may follow
    [train]  seq_len = 256, batch_size = 16, lr_peak = 3e-3, ...
    [[stages]]
    name = "init"; tokens_per_param = 20; mixture = { text = 0.75, code = 0.25 }
    # or code_frac = 0.25: that share from [groups.code], the rest from [groups.text]
    [groups]  code = { web = 0.8, hq = 0.2 }, text = { text = 1.0 }   # default: code, text
    lr = { shape = "cosine", warmup = 0.05, end = 0.1 }

Every key is checked on load: a typo or a value of the wrong type fails before any work,
naming the file, the key and what was expected. `--set key=value` edits the raw tables
first (`train.lr_peak=1e-3`, `stages.cooldown.mixture.code=0.3`, `stages.0.tokens=1M`).
"""

from __future__ import annotations

import copy
import sys
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from codemix.core.errors import CodemixError
from codemix.proxy_train.schedule import LRShape, Schedule, Stage, check_mixture
from codemix.proxy_train.store import TokenStore


@dataclass(frozen=True)
class TrainSettings:
    seq_len: int = 256
    batch_size: int = 16
    lr_peak: float = 3e-3
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    seed: int = 0
    tokens: str | int | float | None = None  # the run's total, when stages give fractions
    carry_optimizer_state: bool = True  # keep Adam moments across stage boundaries
    eval_every: int = 0  # steps between evaluations; 0: at stage ends only
    eval_tokens: int = 32768  # per domain, from the validation split
    checkpoint_every_minutes: float = 10.0
    checkpoints: bool = True  # off only for throughput benchmarks
    log_every: int = 10
    # repetition-matched proxies: train on at most this many unique tokens of a domain (blocks
    # spread through its training split), so that a proxy repeats it as often as the target will
    unique_tokens: dict | tuple | None = None  # stored as ((domain, tokens), ...)
    # the same as a share of each run's total tokens, so that every size of a ladder reads a
    # domain as often (a mixture's share of it / this share) as a target of D tokens with
    # this share of D unique ones will
    unique_share: dict | tuple | None = None  # stored as ((domain, share), ...)

    def __post_init__(self):
        for name in ("seq_len", "batch_size", "eval_tokens", "log_every"):
            if getattr(self, name) < 1:
                raise CodemixError(f"train.{name} = {getattr(self, name)}: must be >= 1")
        for name in ("lr_peak", "grad_clip", "checkpoint_every_minutes"):
            if not getattr(self, name) > 0:
                raise CodemixError(f"train.{name} = {getattr(self, name)}: must be > 0")
        if self.eval_every < 0 or self.weight_decay < 0:
            raise CodemixError("train.eval_every and train.weight_decay must be >= 0")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise CodemixError("train.beta1 and train.beta2 must be in [0, 1)")
        if self.unique_tokens is not None:
            from codemix.core.units import parse_count

            if not isinstance(self.unique_tokens, dict) or not self.unique_tokens:
                raise CodemixError(
                    "train.unique_tokens: give a table of domain = tokens, e.g. { text = '2M' }"
                )
            caps = {}
            for d, v in self.unique_tokens.items():
                caps[d] = int(parse_count(v, f"train.unique_tokens.{d}"))
                if caps[d] < 1:
                    raise CodemixError(f"train.unique_tokens.{d} = {v!r}: must be >= 1")
            # a tuple of pairs: settings are hashed (static arguments of compiled steps)
            object.__setattr__(self, "unique_tokens", tuple(sorted(caps.items())))
        if self.unique_share is not None:
            if not isinstance(self.unique_share, dict) or not self.unique_share:
                raise CodemixError(
                    "train.unique_share: give a table of domain = share of the run's tokens, "
                    "e.g. { text = 0.02 }"
                )
            shares = {}
            for d, v in self.unique_share.items():
                ok = isinstance(v, int | float) and not isinstance(v, bool) and 0 < v <= 1
                if not ok:
                    raise CodemixError(f"train.unique_share.{d} = {v!r}: must be in (0, 1]")
                shares[d] = float(v)
            both = set(shares) & {d for d, _ in self.unique_tokens or ()}
            if both:
                raise CodemixError(
                    f"train.unique_tokens and train.unique_share both cap {sorted(both)}: give one"
                )
            object.__setattr__(self, "unique_share", tuple(sorted(shares.items())))

    def caps(self, run_tokens: int) -> dict[str, int]:
        """Each capped domain's unique tokens for a run of `run_tokens` tokens in all."""
        caps = dict(self.unique_tokens or ())
        for d, share in self.unique_share or ():
            caps[d] = max(1, int(round(share * run_tokens)))
        return caps


@dataclass(frozen=True)
class EvalSettings:
    """[evals]: downstream tasks scored during training, from the requests `codemix evals
    prepare` rendered into the store."""

    suite: str = "paper"  # paper, all, or comma-separated task names (`codemix evals list`)
    every: int = 1  # every K-th evaluation, and at every stage end

    def __post_init__(self):
        if not isinstance(self.every, int) or isinstance(self.every, bool) or self.every < 1:
            raise CodemixError(f"[evals].every = {self.every!r}: must be an integer >= 1")
        _ = self.tasks  # an unknown suite or task fails here

    @property
    def tasks(self) -> list[str]:
        from codemix.proxy_train.tasks import select

        return [t.name for t in select(self.suite)]


@dataclass(frozen=True)
class RunSpec:
    store: Path
    model: dict[str, Any]  # "size" plus ModelConfig overrides
    train: TrainSettings
    schedule: Schedule
    path: Path | None = None
    raw: dict = field(default_factory=dict, compare=False, repr=False)
    groups: dict = field(default_factory=lambda: DEFAULT_GROUPS)  # what code_frac means
    evals: EvalSettings | None = None  # downstream tasks, when [evals] is given

    @property
    def size(self) -> str:
        return self.model["size"]

    @property
    def code_domains(self) -> tuple[str, ...]:
        """The domains [groups] counts as code: a run reports its realised share of them."""
        return tuple(self.groups["code"])


_TYPES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _check_type(value, expected, where: str):
    """TOML gives ints where floats are meant (lr_peak = 1); accept those, nothing looser."""
    ok = isinstance(value, expected) and not (expected is not bool and isinstance(value, bool))
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        raise CodemixError(f"{where}: expected {_TYPES.get(expected, expected)}, got {value!r}")
    return value


def _settings(table: dict, where: str) -> TrainSettings:
    known = {f.name: f for f in fields(TrainSettings)}
    kwargs = {}
    for key, value in table.items():
        if key not in known:
            raise CodemixError(f"{where}: unknown key [train].{key}; known: {', '.join(known)}")
        default = known[key].default
        if key in ("tokens", "unique_tokens", "unique_share"):
            kwargs[key] = value
            continue
        kwargs[key] = _check_type(value, type(default), f"{where}: [train].{key}")
    return TrainSettings(**kwargs)


_LR_KEYS = {
    "shape": str,
    "warmup": float,
    "start": None,
    "end": float,
    "end_lr": float,
    "decay": float,
    "decay_shape": str,
}
_STAGE_KEYS = ("name", "mixture", "code_frac", "tokens", "tokens_per_param", "fraction", "lr")
DEFAULT_GROUPS = {"code": {"code": 1.0}, "text": {"text": 1.0}}


def _mixture_from_code_frac(code_frac, groups: dict, at: str) -> dict[str, float]:
    """code_frac of the tokens from the code group, the rest from the text group, each
    group split by its own shares ([groups] in the spec)."""
    code_frac = _check_type(code_frac, float, f"{at}: code_frac")
    if not 0.0 <= code_frac <= 1.0:
        raise CodemixError(f"{at}: code_frac = {code_frac}; expected a share in [0, 1]")
    mixture: dict[str, float] = {}
    for group, share in (("code", code_frac), ("text", 1.0 - code_frac)):
        for domain, w in groups[group].items():
            mixture[domain] = mixture.get(domain, 0.0) + share * w
    return mixture


def _groups(raw: dict, where: str) -> dict:
    groups = raw.get("groups", DEFAULT_GROUPS)
    if not isinstance(groups, dict) or set(groups) != {"code", "text"}:
        raise CodemixError(f"{where}: [groups] needs exactly the tables code and text")
    for name, shares in groups.items():
        if not isinstance(shares, dict) or not shares:
            raise CodemixError(f"{where}: [groups.{name}] must map domains to shares")
        try:
            check_mixture(shares, f"group {name!r}")
        except CodemixError as e:
            raise CodemixError(f"{where}: {e}") from None
    return groups


def _stage(table: dict, i: int, where: str, groups: dict) -> Stage:
    if not isinstance(table, dict):
        raise CodemixError(f"{where}: [[stages]] entry {i} is not a table")
    name = table.get("name", f"stage{i}")
    at = f"{where}: stage {name!r}"
    for key in table:
        if key not in _STAGE_KEYS:
            raise CodemixError(f"{at}: unknown key {key!r}; known: {', '.join(_STAGE_KEYS)}")
    if "code_frac" in table:
        if "mixture" in table:
            raise CodemixError(f"{at}: give mixture or code_frac, not both")
        table = {**table, "mixture": _mixture_from_code_frac(table["code_frac"], groups, at)}
    if "mixture" not in table or not isinstance(table["mixture"], dict):
        raise CodemixError(f"{at}: needs mixture = {{ DOMAIN = WEIGHT, ... }} or code_frac")
    lr = table.get("lr", {})
    if not isinstance(lr, dict):
        raise CodemixError(f"{at}: lr must be a table like {{ shape = 'cosine' }}")
    lr_kwargs = {}
    for key, value in lr.items():
        if key not in _LR_KEYS:
            raise CodemixError(f"{at}: unknown key lr.{key}; known: {', '.join(_LR_KEYS)}")
        expected = _LR_KEYS[key]
        lr_kwargs[key] = (
            value if expected is None else _check_type(value, expected, f"{at}: lr.{key}")
        )
    try:
        lr_shape = LRShape(**lr_kwargs)
    except CodemixError as e:
        raise CodemixError(f"{at}: {e}") from None
    try:
        return Stage(
            name=str(name),
            mixture=dict(table["mixture"]),
            tokens=table.get("tokens"),
            tokens_per_param=table.get("tokens_per_param"),
            fraction=table.get("fraction"),
            lr=lr_shape,
        )
    except CodemixError as e:
        raise CodemixError(f"{where}: {e}") from None


def _parse_value(text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word: a string


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """`--set a.b.c=value` on the raw TOML tables; stages are addressed by name or index."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise CodemixError(f"--set {item!r}: expected KEY=VALUE, e.g. train.lr_peak=1e-3")
        parts = key.strip().split(".")
        node: Any = raw
        for depth, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                match = [s for s in node if isinstance(s, dict) and s.get("name") == part]
                if match:
                    node = match[0]
                elif part.isdigit() and int(part) < len(node):
                    node = node[int(part)]
                else:
                    names = [s.get("name") for s in node if isinstance(s, dict)]
                    raise CodemixError(f"--set {key}: no stage {part!r} (stages: {names})")
            else:
                if part not in node:
                    if depth == 0:
                        raise CodemixError(f"--set {key}: the spec has no table [{part}]")
                    node[part] = {}
                node = node[part]
                if not isinstance(node, dict | list):
                    raise CodemixError(f"--set {key}: {part} is a value, not a table")
        node[parts[-1]] = _parse_value(text.strip())
    return raw


def build_spec(raw: dict, where: str = "spec", path: Path | None = None) -> RunSpec:
    for key in ("data", "model", "stages"):
        if key not in raw:
            raise CodemixError(
                f"{where}: missing [{key}]" if key != "stages" else f"{where}: missing [[stages]]"
            )
    data, model = raw["data"], dict(raw["model"])
    if not isinstance(data, dict) or "store" not in data:
        raise CodemixError(f"{where}: [data] needs store = 'PATH' (a token store)")
    if "size" not in model:
        raise CodemixError(f"{where}: [model] needs size = 'NAME' (see `codemix presets`)")
    stages = raw["stages"]
    if not isinstance(stages, list):
        raise CodemixError(f"{where}: stages must be an array of tables, [[stages]]")
    settings = _settings(raw.get("train", {}), where)
    groups = _groups(raw, where)
    schedule_stages = tuple(_stage(t, i, where, groups) for i, t in enumerate(stages))
    try:
        schedule = Schedule(schedule_stages, run_tokens=settings.tokens)
    except CodemixError as e:
        raise CodemixError(f"{where}: {e}") from None
    evals = None
    if "evals" in raw:
        table = raw["evals"]
        if not isinstance(table, dict) or set(table) - {"suite", "every"}:
            raise CodemixError(f"{where}: [evals] takes suite = 'paper' and every = K")
        try:
            evals = EvalSettings(**table)
        except CodemixError as e:
            raise CodemixError(f"{where}: {e}") from None
    return RunSpec(Path(str(data["store"])), model, settings, schedule, path, raw, groups, evals)


def read_toml(path: Path, overrides: list[str] | None = None, what: str = "spec file") -> dict:
    """The raw tables of a spec file with `--set` overrides applied."""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise CodemixError(f"{path}: no such {what}") from None
    except tomllib.TOMLDecodeError as e:
        raise CodemixError(f"{path}: not valid TOML ({e})") from None
    return apply_overrides(raw, overrides or [])


def load_spec(path: str | Path, overrides: list[str] | None = None) -> RunSpec:
    path = Path(path)
    return build_spec(read_toml(path, overrides), str(path), path)


def open_store(spec: RunSpec) -> TokenStore:
    """The spec's token store, checked against the spec: errors name the spec file and the
    store's absolute path (relative paths resolve against the current folder)."""
    where = spec.path or "spec"
    try:
        store = TokenStore(spec.store)
    except CodemixError as e:
        raise CodemixError(
            f"{where}: [data] store = {str(spec.store)!r} (resolved against the current folder "
            f"to {spec.store.absolute()}): {e}"
        ) from None
    check_domains(spec.schedule, store, where)
    check_val_windows(store, spec.train.seq_len, spec.train.eval_tokens, where)
    if spec.evals is not None:
        missing = [t for t in spec.evals.tasks if t not in store.manifest.get("evals", {})]
        if missing:
            raise CodemixError(
                f"{where}: [evals] suite {spec.evals.suite!r} needs tasks the store "
                f"{store.path.absolute()} has not rendered ({', '.join(missing)}); run "
                f"`codemix evals prepare {spec.store} --suite {spec.evals.suite}`"
            )
    return store


_SAID: set[tuple] = set()  # the notes of `check_val_windows` this process printed


def val_windows(n_tokens: int, seq_len: int, eval_tokens: int) -> int:
    """Whole windows of seq_len + 1 tokens (stride seq_len) the evaluation reads from a
    validation split of n_tokens: eval_tokens' worth, or all the split holds."""
    return min(max(1, eval_tokens // seq_len), (n_tokens - 1) // seq_len)


def check_val_windows(store: TokenStore, seq_len: int, eval_tokens: int, where: str | Path) -> None:
    """Every domain's validation split must hold one window of seq_len + 1 tokens: the
    evaluation reads whole windows, and a domain with none would get no loss at all. A
    split shorter than `eval_tokens` is read whole, and a note says so."""
    have = {d: store.n_tokens(d, "val") for d in store.domains}
    short = {d: n for d, n in have.items() if n < seq_len + 1}
    if short:
        each = ", ".join(f"{d} {n:,}" for d, n in short.items())
        raise CodemixError(
            f"{where}: train.seq_len = {seq_len} needs at least {seq_len + 1:,} validation "
            f"tokens per domain, and the token store {store.path.absolute()} has fewer "
            f"({each}); prepare it again with a larger --val-frac, or train shorter sequences"
        )
    asked = max(1, eval_tokens // seq_len)
    read = {d: val_windows(n, seq_len, eval_tokens) for d, n in have.items()}
    few = {d: k for d, k in read.items() if k < asked}
    said = (str(store.path.absolute()), seq_len, eval_tokens)
    if few and said not in _SAID:  # once a process: `study run` checks, then its worker
        _SAID.add(said)
        each = ", ".join(f"{d} {k * seq_len:,}" for d, k in few.items())
        print(
            f"note: train.eval_tokens = {eval_tokens:,}, but the validation split of the "
            f"token store {store.path.absolute()} holds fewer tokens in whole windows of "
            f"{seq_len}: bits per byte read on {each} tokens (every run alike, so they "
            "compare; noisier than asked)",
            file=sys.stderr,
        )


def check_domains(schedule: Schedule, store: TokenStore, where: str | Path) -> None:
    """Every domain a stage mixes must be in the store."""
    for stage in schedule.stages:
        unknown = sorted(set(stage.mixture) - set(store.domains))
        if unknown:
            raise CodemixError(
                f"{where}: stage {stage.name!r} mixes {', '.join(map(repr, unknown))}, which the "
                f"token store {store.path.absolute()} does not have (its domains: "
                f"{', '.join(store.domains)})"
            )
