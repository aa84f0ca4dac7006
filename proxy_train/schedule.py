"""Mixture schedules: a run is a list of stages, each with a token budget, a mixture over
domains and a learning-rate shape.

A stage's budget is one of `tokens` (absolute, "200B"), `tokens_per_param` (scales with
the model, so one spec serves a whole ladder of sizes) or `fraction` (of the run's total).
Learning rates are multipliers of the run's peak; `end_lr` is an absolute floor such as
the 1e-6 of a cooldown. numpy-free on purpose: the trainer evaluates it on the host.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from codemix.core.errors import CodemixError
from codemix.core.results import check_name
from codemix.core.units import parse_count

DECAY_SHAPES = ("linear", "1-sqrt", "exponential", "cosine")
LR_SHAPES = ("cosine", "constant", "linear", "1-sqrt", "exponential", "wsd")
_WEIGHT_TOL = 1e-6


@dataclass(frozen=True)
class LRShape:
    """Learning rate over one stage, as a multiple of the run's peak.

    Every shape begins with a linear warm-up over `warmup` (share of the stage's steps)
    from 0 to `start`. cosine, linear, 1-sqrt (1 - sqrt of the progress, Hägele et al.
    2024) and exponential (geometric, to a floor above 0) then decay from `start` to `end`;
    constant holds `start`. wsd (warmup-stable-decay) holds `start` and decays over the
    stage's last `decay` share with `decay_shape` (default 1-sqrt): one stage for a whole
    WSD run, or a stable stage followed by decaying stages for several decays from one
    trunk. `start="continue"` begins where the previous stage ended; `end_lr`, when set,
    replaces `end` by an absolute learning rate."""

    shape: str = "cosine"
    warmup: float = 0.0
    start: float | str = 1.0
    end: float = 0.1
    end_lr: float | None = None
    decay: float | None = None  # wsd: share of the stage's steps in the decay (0.2)
    decay_shape: str | None = None  # wsd: one of DECAY_SHAPES (1-sqrt)

    def __post_init__(self):
        if self.shape not in LR_SHAPES:
            raise CodemixError(f"lr.shape {self.shape!r}: expected one of {', '.join(LR_SHAPES)}")
        if not 0.0 <= self.warmup < 1.0:
            raise CodemixError(f"lr.warmup {self.warmup}: expected a share of the stage in [0, 1)")
        if isinstance(self.start, str) and self.start != "continue":
            raise CodemixError(f"lr.start {self.start!r}: expected a number or 'continue'")
        if not isinstance(self.start, str) and self.start < 0:
            raise CodemixError(f"lr.start {self.start}: must be >= 0")
        if self.end < 0 or (self.end_lr is not None and self.end_lr < 0):
            raise CodemixError("lr.end and lr.end_lr must be >= 0")
        if self.shape != "wsd" and (self.decay is not None or self.decay_shape is not None):
            raise CodemixError(
                f"lr.decay and lr.decay_shape belong to shape 'wsd', not {self.shape!r}"
            )
        if self.decay is not None and not 0.0 < self.decay <= 1.0:
            raise CodemixError(f"lr.decay {self.decay}: expected a share of the stage in (0, 1]")
        if self.decay_shape is not None and self.decay_shape not in DECAY_SHAPES:
            raise CodemixError(
                f"lr.decay_shape {self.decay_shape!r}: expected one of {', '.join(DECAY_SHAPES)}"
            )
        if self._decay_shape == "exponential" and (
            self.end_lr == 0 or (self.end_lr is None and self.end == 0)
        ):
            raise CodemixError(
                "an exponential decay never reaches 0: give lr.end (or lr.end_lr) above 0"
            )

    @property
    def _decay_shape(self) -> str:
        if self.shape == "wsd":
            return self.decay_shape or "1-sqrt"
        return self.shape

    def value(self, i: int, n: int, lr_peak: float, prev_end_lr: float) -> float:
        """Learning rate at step i of the stage's n steps."""
        start = prev_end_lr if self.start == "continue" else self.start * lr_peak
        end = self.end_lr if self.end_lr is not None else self.end * lr_peak
        n_warm = self.warmup * n
        if i < n_warm:
            return start * (i + 1) / n_warm
        if self.shape == "constant":
            return start
        first = n_warm
        if self.shape == "wsd":  # stable until the decay's first step
            first = self.decay_start(n)
            if i < first:
                return start
        u = (i - first) / max(1.0, n - 1 - first)
        return _decay(self._decay_shape, start, end, min(1.0, u))

    def decay_start(self, n: int) -> float:
        """wsd: where the decay begins in a stage of n steps; the steps before it are stable
        (warm-up included), whatever the decay's share, shape or end."""
        return max(self.warmup * n, n - (self.decay if self.decay is not None else 0.2) * n)

    def final(self, lr_peak: float, prev_end_lr: float) -> float:
        if self.shape == "constant":
            return prev_end_lr if self.start == "continue" else float(self.start) * lr_peak
        return self.end_lr if self.end_lr is not None else self.end * lr_peak


def _decay(shape: str, start: float, end: float, u: float) -> float:
    """From `start` at u = 0 to `end` at u = 1."""
    if shape == "linear":
        return start + (end - start) * u
    if shape == "1-sqrt":
        return end + (start - end) * (1.0 - math.sqrt(u))
    if shape == "exponential":
        return start * (end / start) ** u if start > 0 else 0.0
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * u))


@dataclass(frozen=True)
class Stage:
    name: str
    mixture: Mapping[str, float]
    tokens: str | int | float | None = None
    tokens_per_param: float | None = None
    fraction: float | None = None
    lr: LRShape = field(default_factory=LRShape)

    def __post_init__(self):
        check_name(self.name, "stage")
        where = f"stage {self.name!r}"
        given = [
            k for k in ("tokens", "tokens_per_param", "fraction") if getattr(self, k) is not None
        ]
        if len(given) != 1:
            raise CodemixError(
                f"{where}: give exactly one budget of tokens, tokens_per_param or fraction "
                f"(got {', '.join(given) or 'none'})"
            )
        budget = getattr(self, given[0])
        value = parse_count(budget, f"{where}: {given[0]}") if given[0] == "tokens" else budget
        if not isinstance(value, int | float) or not value > 0:
            raise CodemixError(f"{where}: {given[0]} = {budget!r}; a stage needs a budget > 0")
        if self.fraction is not None and self.fraction > 1:
            raise CodemixError(f"{where}: fraction = {self.fraction} is more than the whole run")
        check_mixture(self.mixture, where)

    def budget_tokens(self, n_params: float | None, run_tokens: float | None) -> float:
        if self.tokens is not None:
            return parse_count(self.tokens)
        if self.tokens_per_param is not None:
            if n_params is None:
                raise CodemixError(f"stage {self.name!r}: tokens_per_param needs a model size")
            return self.tokens_per_param * n_params
        if run_tokens is None:
            raise CodemixError(f"stage {self.name!r}: fraction needs the run's total tokens")
        return self.fraction * run_tokens


def check_mixture(mixture: Mapping[str, float], where: str) -> None:
    if not mixture:
        raise CodemixError(f"{where}: empty mixture")
    for d, w in mixture.items():
        if isinstance(w, bool) or not isinstance(w, int | float) or math.isnan(w):
            raise CodemixError(f"{where}: weight of {d!r} is {w!r}, not a number")
        if w < 0:
            raise CodemixError(f"{where}: weight of {d!r} is {w}; weights must be >= 0")
    total = sum(mixture.values())
    if abs(total - 1.0) > _WEIGHT_TOL:
        raise CodemixError(
            f"{where}: mixture weights sum to {total:.6g}, not 1 "
            f"({', '.join(f'{d}={w}' for d, w in mixture.items())}); codemix does not "
            "normalise them for you"
        )


@dataclass(frozen=True)
class StagePlan:
    """A stage resolved to steps for one model size and batch shape."""

    stage: Stage
    first_step: int
    n_steps: int

    @property
    def end_step(self) -> int:
        return self.first_step + self.n_steps


@dataclass(frozen=True)
class Schedule:
    stages: tuple[Stage, ...]
    run_tokens: str | int | float | None = None  # total, when stages give fractions

    def __post_init__(self):
        if not self.stages:
            raise CodemixError("a schedule needs at least one stage")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise CodemixError(f"stage names repeat: {names}")
        fractions = [s.fraction is not None for s in self.stages]
        if any(fractions) and not all(fractions):
            raise CodemixError(
                "stages mix fraction budgets with tokens/tokens_per_param; use one kind"
            )
        if all(fractions):
            total = sum(s.fraction for s in self.stages)
            if abs(total - 1) > _WEIGHT_TOL:
                raise CodemixError(f"stage fractions sum to {total:.6g}, not 1")
            if self.run_tokens is None:
                raise CodemixError("stages give fractions, so the run needs a total `tokens`")

    @property
    def domains(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for s in self.stages:
            seen.update(dict.fromkeys(s.mixture))
        return tuple(seen)

    def stage_tokens(
        self, n_params: float | None = None, max_tokens: float | None = None
    ) -> list[float]:
        run = parse_count(self.run_tokens, "run tokens") if self.run_tokens is not None else None
        tokens = [s.budget_tokens(n_params, run) for s in self.stages]
        if max_tokens is not None and sum(tokens) > max_tokens:
            scale = max_tokens / sum(tokens)  # --max-tokens keeps the stage proportions
            tokens = [t * scale for t in tokens]
        return tokens

    def plan(
        self, tokens_per_step: int, n_params: float | None = None, max_tokens: float | None = None
    ) -> list[StagePlan]:
        plans, step = [], 0
        for stage, tokens in zip(self.stages, self.stage_tokens(n_params, max_tokens), strict=True):
            n = round(tokens / tokens_per_step)
            if n < 1:  # a stage of no steps would silently drop out of the schedule
                raise CodemixError(
                    f"stage {stage.name!r}: {tokens:,.0f} tokens is less than one step of "
                    f"{tokens_per_step:,} tokens (batch_size x seq_len)"
                    + (f" under max_tokens = {max_tokens:,.0f}" if max_tokens is not None else "")
                    + "; give the stage a larger budget"
                )
            plans.append(StagePlan(stage, step, n))
            step += n
        return plans


def describe_plan(plans: Sequence[StagePlan], tokens_per_step: int) -> str:
    """'init 40 steps (163,840 tokens), cooldown 10 steps (40,960 tokens)': what a run trains
    once budgets are rounded to whole steps."""
    return ", ".join(
        f"{p.stage.name} {p.n_steps:,} step{'s' if p.n_steps != 1 else ''} "
        f"({p.n_steps * tokens_per_step:,} tokens)"
        for p in plans
    )


def stage_at(plans: Sequence[StagePlan], step: int) -> int:
    """Index of the stage that holds `step`."""
    for k, p in enumerate(plans):
        if step < p.end_step:
            return k
    raise IndexError(f"step {step} is past the schedule's {plans[-1].end_step} steps")


def learning_rate(plans: Sequence[StagePlan], step: int, lr_peak: float) -> float:
    prev_end = 0.0
    for p in plans:
        if step < p.end_step:
            return p.stage.lr.value(step - p.first_step, p.n_steps, lr_peak, prev_end)
        prev_end = p.stage.lr.final(lr_peak, prev_end)
    raise IndexError(f"step {step} is past the schedule's {plans[-1].end_step} steps")
