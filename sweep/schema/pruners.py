"""The pruner section of a study file and the Optuna pruner it builds.

Trials are compared at the same point of their own schedule: each trial evaluates at
``training.eval_points`` evenly spread fractions of its total steps (10 %, 20 %, ... by default),
and the orchestrator reports the eval loss at step ``k`` for the k-th point. A 1-epoch and a 3-epoch
trial are so compared at the same stage of their learning-rate decay, not at the same step count,
where the shorter one would always look better for having annealed sooner. Pruner arguments that
count steps (``n_warmup_steps``, ``interval_steps``, ``min_resource``, ``max_resource``) count these
points. ``docs/pruning.md`` explains the choice and what the benchmark measured.

Each argument belongs to some pruners; giving one to a pruner that ignores it is an error, so a
study file never says more than it does::

    pruner: {name: median, n_startup_trials: 5, n_warmup_steps: 3}
    pruner: {name: patient, patience: 2, wrapped: {name: median}}
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from trainer.spec import Strict

PRUNERS = ("none", "median", "percentile", "successive_halving", "hyperband", "patient")
# which pruners read each argument
USED_BY = {
    "n_startup_trials": ("median", "percentile"),
    "n_warmup_steps": ("median", "percentile"),
    "interval_steps": ("median", "percentile"),
    "percentile": ("percentile",),
    "min_resource": ("successive_halving", "hyperband"),
    "reduction_factor": ("successive_halving", "hyperband"),
    "max_resource": ("hyperband",),
    "patience": ("patient",),
    "min_delta": ("patient",),
    "wrapped": ("patient",),
}


class PrunerConfig(Strict):
    """Which Optuna pruner stops unpromising trials early (``none`` keeps every trial to its end)."""

    name: Literal["none", "median", "percentile", "successive_halving", "hyperband", "patient"] = Field(
        "percentile", description="Optuna pruner (default percentile 75: as quick as median on both recorded "
        "grids, and it stops far fewer of the best configurations' trials; docs/BENCHMARKS.md)."
    )
    n_startup_trials: int = Field(3, ge=0, description="median/percentile: trials that finish before any is pruned.")
    n_warmup_steps: int = Field(3, ge=0, description="median/percentile: eval points before a trial can be pruned.")
    interval_steps: int = Field(1, ge=1, description="median/percentile: check every N eval points.")
    percentile: float = Field(
        75.0, gt=0.0, lt=100.0,
        description="percentile: prune a trial worse than this percentile of the others at its eval point "
                    "(75: the worst quarter; 50 is the median pruner).")
    min_resource: int | Literal["auto"] = Field(
        "auto", description="successive_halving/hyperband: eval points of the first rung (auto: 1)."
    )
    reduction_factor: int = Field(3, ge=2, description="successive_halving/hyperband: keep 1/N per rung.")
    max_resource: int | Literal["auto"] = Field(
        "auto", description="hyperband: eval points of the last rung (auto: as many as the first finished trial)."
    )
    patience: int = Field(2, ge=0, description="patient: eval points without improvement before pruning.")
    min_delta: float = Field(0.0, ge=0.0, description="patient: smallest change that counts as improvement.")
    wrapped: PrunerConfig | None = Field(None, description="patient: the pruner it wraps (default none).")

    @model_validator(mode="after")
    def _arguments_fit_the_pruner(self):
        unused = [f for f in sorted(self.model_fields_set) if f in USED_BY and self.name not in USED_BY[f]]
        if unused:
            users = "; ".join(f"{f} is for {', '.join(USED_BY[f])}" for f in unused)
            raise ValueError(f"the {self.name} pruner does not use {', '.join(unused)} ({users})")
        for key in ("min_resource", "max_resource"):
            value = getattr(self, key)
            if value != "auto" and value < 1:
                raise ValueError(f"{key} must be at least 1 or 'auto', but got {key}={value}")
        if isinstance(self.min_resource, int) and isinstance(self.max_resource, int) \
                and self.max_resource <= self.min_resource:
            raise ValueError(f"max_resource must exceed min_resource, but got max_resource={self.max_resource}, "
                             f"min_resource={self.min_resource}")
        return self

    def eval_points_problem(self, eval_points: int) -> str | None:
        """Why this pruner could never act on trials of ``eval_points`` reported points, or None."""
        if self.name in ("median", "percentile") and self.n_warmup_steps >= eval_points:
            return (f"search.pruner.n_warmup_steps: {self.n_warmup_steps} leaves no eval point to prune at: "
                    f"each trial reports training.eval_points {eval_points}")
        if self.name in ("successive_halving", "hyperband") and self.min_resource != "auto" \
                and self.min_resource >= eval_points:
            return (f"search.pruner.min_resource: {self.min_resource} leaves no eval point to prune at: "
                    f"each trial reports training.eval_points {eval_points}")
        if self.name == "hyperband" and self.max_resource != "auto" and self.max_resource > eval_points:
            return (f"search.pruner.max_resource: {self.max_resource} is more than the training.eval_points "
                    f"{eval_points} that each trial reports")
        if self.name == "patient" and self.wrapped is not None:
            return self.wrapped.eval_points_problem(eval_points)
        return None


def build_pruner(config: PrunerConfig):
    """The Optuna pruner for a study file's pruner section."""
    import optuna

    p = optuna.pruners
    # one eval point: Optuna's own "auto" would guess a step count from the first trial's last step
    min_resource = 1 if config.min_resource == "auto" else config.min_resource
    if config.name == "none":
        return p.NopPruner()
    if config.name == "median":
        return p.MedianPruner(config.n_startup_trials, config.n_warmup_steps, config.interval_steps)
    if config.name == "percentile":
        return p.PercentilePruner(config.percentile, config.n_startup_trials, config.n_warmup_steps, config.interval_steps)
    if config.name == "successive_halving":
        return p.SuccessiveHalvingPruner(min_resource=min_resource, reduction_factor=config.reduction_factor)
    if config.name == "hyperband":
        return p.HyperbandPruner(min_resource=min_resource, max_resource=config.max_resource,
                                 reduction_factor=config.reduction_factor)
    wrapped = build_pruner(config.wrapped) if config.wrapped else None
    return p.PatientPruner(wrapped, patience=config.patience, min_delta=config.min_delta)
