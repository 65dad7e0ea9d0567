"""The sampler section of a study file and the Optuna sampler it builds.

``tpe`` (default; multivariate, seeded), ``random``, ``grid`` (every combination of the searched
parameters' choices), ``gp`` (Gaussian process; Optuna computes it with torch on the CPU, imported
only when chosen), ``cmaes``, ``qmc`` and ``nsgaii`` (the genetic NSGA-II, made for multi-objective
studies, generations of ``population_size`` trials). All take ``seed``. All but ``cmaes`` serve a
multi-objective study (``search.objective`` a list); Optuna's CMA-ES refuses one.

A resumed run, or a second worker, builds its sampler with ``run_index`` added to the seed, so it
does not draw the same "random" configurations again. Not the grid: its seed shuffles the order of
the grid points and each trial records only its index in that order (``grid_id``), so every run of
a grid study must shuffle alike or the indices name other points (the first real grid ran 4 points
twice and 4 never, see :mod:`sweep.run.grid_gaps`).
"""

from __future__ import annotations

import itertools
from typing import Literal, get_args

from pydantic import Field

from trainer.spec import Strict

SamplerName = Literal["tpe", "random", "grid", "gp", "cmaes", "qmc", "nsgaii"]
SAMPLERS: tuple[str, ...] = get_args(SamplerName)
SINGLE_OBJECTIVE_SAMPLERS = ("cmaes",)  # Optuna raises for these in a study of several objectives


class SamplerConfig(Strict):
    """Which Optuna sampler explores the space."""

    name: SamplerName = Field("tpe", description="Optuna sampler.")
    seed: int = Field(42, description="Seed, so a study can be repeated.")
    n_startup_trials: int = Field(5, ge=0, description="Random trials before TPE/GP/CMA-ES model the space.")
    multivariate: bool = Field(True, description="TPE: model parameters jointly (helps when lr and r interact).")
    population_size: int = Field(
        10, ge=2, description="nsgaii: trials per generation (Optuna's 50 is more than most sweeps run)."
    )


def grid_of(space) -> dict[str, list]:
    """The grid of a space whose searched parameters all have choices (or integer ranges)."""
    grid = {}
    for name in space.searched_names():
        param = space.lora_alpha if name == "alpha_per_rank" else getattr(space, name)
        values = param.alpha_per_rank if name == "alpha_per_rank" else param.choices
        if values is None and getattr(param, "step", None) is not None:
            values = list(range(param.low, param.high + 1, param.step))
        if values is None:
            raise ValueError(f"the grid sampler needs choices for {name}, not a continuous range")
        grid[name] = list(values)
    return grid


def grid_size(space) -> int:
    return len(list(itertools.product(*grid_of(space).values())))


def build_sampler(config: SamplerConfig, space, run_index: int = 0):
    """The Optuna sampler for a study file's sampler section and search space, in the study's ``run_index``-th run."""
    import optuna

    if config.name == "grid":
        return _study_grid_sampler()(grid_of(space), seed=config.seed)
    config = config.model_copy(update={"seed": config.seed + run_index})
    if config.name == "tpe":
        return optuna.samplers.TPESampler(
            seed=config.seed, multivariate=config.multivariate, group=config.multivariate,
            n_startup_trials=config.n_startup_trials, constant_liar=True,
        )
    if config.name == "random":
        return optuna.samplers.RandomSampler(seed=config.seed)
    if config.name == "gp":
        return optuna.samplers.GPSampler(seed=config.seed, n_startup_trials=config.n_startup_trials)
    if config.name == "cmaes":
        return optuna.samplers.CmaEsSampler(
            seed=config.seed, n_startup_trials=config.n_startup_trials,
            independent_sampler=optuna.samplers.TPESampler(seed=config.seed),
        )
    if config.name == "nsgaii":
        return optuna.samplers.NSGAIISampler(seed=config.seed, population_size=config.population_size)
    # scrambled, or the seed would not change the sequence; categorical parameters go to random sampling
    return optuna.samplers.QMCSampler(scramble=True, seed=config.seed,
                                      independent_sampler=optuna.samplers.RandomSampler(seed=config.seed))


def _study_grid_sampler():
    """Optuna's grid sampler without its ``study.stop()`` after the last point.

    That call is meant for ``study.optimize``; under the sweep's own trial loop it raises from
    ``study.tell`` (the trial is stored, the worker thread dies). The loop ends a study by its
    ``n_trials``, which a grid study caps at the grid's size.
    """
    import optuna

    class StudyGridSampler(optuna.samplers.GridSampler):
        def after_trial(self, study, trial, state, values) -> None:
            pass

    return StudyGridSampler
