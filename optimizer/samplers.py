"""Optuna samplers by name: tpe, gp, nsga2, qmc, random, grid."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

from codemix.errors import CodemixError

SAMPLERS = ("tpe", "gp", "nsga2", "qmc", "random", "grid")


def make_sampler(
    name: str,
    seed: int | None = None,
    grid: Mapping[str, Sequence] | None = None,
    n_objectives: int = 1,
):
    """The Optuna sampler for `name`. `grid` (param -> values) is required for "grid"."""
    import optuna

    if name not in SAMPLERS:
        raise CodemixError(f"sampler {name!r}: expected one of {', '.join(SAMPLERS)}")
    if name == "tpe":
        # multivariate TPE models the mixture shares jointly rather than one by one; the
        # constant liar keeps a batch of trials asked together from piling onto one point
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=True, group=True, constant_liar=True
            )
    if name == "gp":
        try:
            import torch  # noqa: F401  (Optuna's GP sampler is built on PyTorch)
        except ImportError:
            raise CodemixError(
                "sampler 'gp' needs PyTorch (pip install 'codemix[gp]' or torch); "
                "tpe, qmc, nsga2, random and grid work without it"
            ) from None
        return optuna.samplers.GPSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, scramble=True, qmc_type="sobol")
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if not grid:
        raise CodemixError("sampler 'grid' needs every search parameter given as values = [...]")
    return optuna.samplers.GridSampler(dict(grid), seed=seed)
