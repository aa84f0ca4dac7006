"""Optuna samplers by name (tpe, gp, nsga2, qmc, random, grid), and the sampler a study asks
through.

`StudySampler` gives a study's first `start` trials Sobol points (a space-filling start; all
of them for "qmc"), then the named sampler's proposals. Each trial gets the named sampler
seeded from (study seed, trial number): trial numbers are unique in a storage, so parallel
workers, workers on other machines and resumed runs never draw the same point, and one
worker's study replays exactly from its seed.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import optuna

from codemix.core.errors import CodemixError

SAMPLERS = ("tpe", "gp", "nsga2", "qmc", "random", "grid")
LEARNING = ("tpe", "gp", "nsga2")  # samplers that use results: they are asked in waves


def make_sampler(
    name: str,
    seed: int | None = None,
    grid: Mapping[str, Sequence] | None = None,
    n_objectives: int = 1,
    n_startup: int | None = None,
    population: int | None = None,
):
    """The Optuna sampler for `name`. `grid` (param -> values) is required for "grid";
    `n_startup` trials are drawn at random before TPE and GP model the results."""

    if name not in SAMPLERS:
        raise CodemixError(f"sampler {name!r}: expected one of {', '.join(SAMPLERS)}")
    startup = {} if n_startup is None else {"n_startup_trials": n_startup}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            # multivariate TPE models the mixture shares jointly rather than one by one; the
            # constant liar keeps trials asked in one wave from piling onto one point
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=True, group=True, constant_liar=True, **startup
            )
        if name == "gp":
            try:
                import torch  # noqa: F401  (Optuna's GP sampler is built on PyTorch)
            except ImportError:
                raise CodemixError(
                    "sampler 'gp' needs PyTorch (pip install 'codemix[gp]' or torch); "
                    "tpe, qmc, nsga2, random and grid work without it"
                ) from None
            # Optuna's GP conditions on running trials itself, so a wave spreads out
            return optuna.samplers.GPSampler(seed=seed, **startup)
        if name == "nsga2":
            pop = {} if population is None else {"population_size": max(2, population)}
            return optuna.samplers.NSGAIISampler(seed=seed, **pop)
        if name == "qmc":
            return optuna.samplers.QMCSampler(seed=seed, scramble=True, qmc_type="sobol")
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
    if not grid:
        raise CodemixError("sampler 'grid' needs every search parameter given as values = [...]")
    return optuna.samplers.GridSampler(dict(grid), seed=seed)


def trial_seed(seed: int, number: int) -> int:
    """A seed of its own for every trial of a study, the same on every machine."""
    digest = hashlib.blake2b(f"{seed}/{number}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def sobol_point(index: int, dims: int, seed: int) -> list[float]:
    """Point `index` of a scrambled Sobol sequence in [0, 1)^dims (the same for every caller)."""
    from scipy.stats import qmc

    engine = qmc.Sobol(dims, scramble=True, seed=seed)
    if index:
        engine.fast_forward(index)
    with warnings.catch_warnings():  # single points break Sobol's power-of-two balance
        warnings.simplefilter("ignore")
        return [float(x) for x in engine.random(1)[0]]


def to_distribution(u: float, dist) -> Any:
    """Map u in [0, 1) into an Optuna distribution (floats, log floats, categoricals)."""
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return dist.choices[min(int(u * len(dist.choices)), len(dist.choices) - 1)]
    if dist.log:
        lo, hi = math.log(dist.low), math.log(dist.high)
        return min(dist.high, max(dist.low, math.exp(lo + u * (hi - lo))))
    return min(dist.high, max(dist.low, dist.low + u * (dist.high - dist.low)))


class StudySampler(optuna.samplers.BaseSampler):
    """Sobol points for the trials numbered below `start` (every trial for "qmc"), then the
    named sampler, built afresh for each trial with the trial's own seed."""

    def __init__(
        self,
        name: str,
        seed: int,
        space: dict,
        start: int,
        n_objectives: int = 1,
        wave: int | None = None,
    ):
        self.name, self.seed, self.space, self.start = name, seed, dict(space), start
        self.n_objectives, self.wave = n_objectives, wave
        self._inner: tuple[int, Any] | None = None

    def _for(self, number: int):
        if self._inner is None or self._inner[0] != number:
            seed = trial_seed(self.seed, number)
            inner = make_sampler(self.name, seed, None, self.n_objectives, self.start, self.wave)
            self._inner = (number, inner)
        return self._inner[1]

    def _sobol(self, number: int) -> bool:
        return self.name == "qmc" or number < self.start

    def infer_relative_search_space(self, study, trial):
        if self._sobol(trial.number):
            return dict(self.space)
        return self._for(trial.number).infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        if not self._sobol(trial.number):
            return self._for(trial.number).sample_relative(study, trial, search_space)
        u = sobol_point(trial.number, len(self.space), self.seed)
        return {k: to_distribution(x, d) for x, (k, d) in zip(u, self.space.items(), strict=True)}

    def sample_independent(self, study, trial, param_name, param_distribution):
        inner = self._for(trial.number)
        return inner.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial):
        self._for(trial.number).before_trial(study, trial)

    def after_trial(self, study, trial, state, values):
        self._for(trial.number).after_trial(study, trial, state, values)


def study_sampler(
    name: str,
    seed: int,
    space: dict,
    start: int,
    grid: Mapping[str, Sequence] | None = None,
    n_objectives: int = 1,
    wave: int | None = None,
):
    """The sampler a study asks through. `space` maps parameter names to the distributions
    the study suggests; the grid sampler is used as it is, since its grid ids mean the same
    on every worker only under one seed."""
    if name == "grid":
        return make_sampler(name, seed, grid, n_objectives)
    return StudySampler(name, seed, space, 0 if name == "random" else start, n_objectives, wave)
