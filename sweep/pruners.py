"""The pruner section of a study file and the Optuna pruner it builds.

Trials are compared at the same point of their own schedule: each trial evaluates at
``training.eval_points`` evenly spread fractions of its total steps (10 %, 20 %, ... by default),
and the orchestrator reports the eval loss at step ``k`` for the k-th point. A 1-epoch and a 3-epoch
trial are so compared at the same stage of their learning-rate decay, not at the same step count,
where the shorter one would always look better for having annealed sooner. Pruner arguments that
count steps (``n_warmup_steps``, ``interval_steps``, ``min_resource``) count these points.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from trainer.spec import Strict


class PrunerConfig(Strict):
    """Which Optuna pruner stops unpromising trials early (``none`` keeps every trial to its end)."""

    name: Literal["none", "median", "percentile", "successive_halving", "hyperband", "patient"] = Field(
        "median", description="Optuna pruner."
    )
    n_startup_trials: int = Field(3, ge=0, description="median/percentile: trials that finish before any is pruned.")
    n_warmup_steps: int = Field(3, ge=0, description="median/percentile: eval points before a trial can be pruned.")
    interval_steps: int = Field(1, ge=1, description="median/percentile: check every N eval points.")
    percentile: float = Field(50.0, gt=0.0, lt=100.0, description="percentile: prune below this percentile.")
    min_resource: int | Literal["auto"] = Field("auto", description="successive_halving/hyperband: first rung (points).")
    reduction_factor: int = Field(3, ge=2, description="successive_halving/hyperband: keep 1/N per rung.")
    max_resource: int | Literal["auto"] = Field("auto", description="hyperband: last rung (eval points).")
    patience: int = Field(2, ge=0, description="patient: eval points without improvement before pruning.")
    min_delta: float = Field(0.0, ge=0.0, description="patient: smallest change that counts as improvement.")
    wrapped: PrunerConfig | None = Field(None, description="patient: the pruner it wraps (default none).")

    @model_validator(mode="after")
    def _wrapped_only_for_patient(self):
        if self.wrapped is not None and self.name != "patient":
            raise ValueError("wrapped is only for the patient pruner")
        return self


def build_pruner(config: PrunerConfig):
    """The Optuna pruner for a study file's pruner section."""
    import optuna

    p = optuna.pruners
    if config.name == "none":
        return p.NopPruner()
    if config.name == "median":
        return p.MedianPruner(config.n_startup_trials, config.n_warmup_steps, config.interval_steps)
    if config.name == "percentile":
        return p.PercentilePruner(config.percentile, config.n_startup_trials, config.n_warmup_steps, config.interval_steps)
    if config.name == "successive_halving":
        return p.SuccessiveHalvingPruner(min_resource=config.min_resource, reduction_factor=config.reduction_factor)
    if config.name == "hyperband":
        return p.HyperbandPruner(min_resource=1 if config.min_resource == "auto" else config.min_resource,
                                 max_resource=config.max_resource, reduction_factor=config.reduction_factor)
    wrapped = build_pruner(config.wrapped) if config.wrapped else None
    return p.PatientPruner(wrapped, patience=config.patience, min_delta=config.min_delta)
