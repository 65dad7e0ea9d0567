"""A trial's values for an objective (:mod:`sweep.schema.objectives`), from what the trial recorded.

One rule for a trial that just ended (:func:`sweep.run.trial_outcome.conclude`, after the trainer's
result is recorded on it) and for a finished trial carried into a study of another objective (a new
study version, :mod:`sweep.study.study_versions`): each metric is read from the trial's user
attributes (:mod:`sweep.study.trial_attrs`), and only where it describes the adapter the trial kept.

- ``last_eval``: ``eval_loss``, of a trial that kept its last step's adapter;
- ``best_eval``: ``adapter_eval_loss``, of a trial that kept its best eval point's adapter
  (``keep_adapter: best_eval``): a trial that kept its last adapter has no best_eval value, since
  the adapter of its best point is gone;
- ``chrf``: ``chrf``;
- ``gpu_seconds``: ``train_seconds`` on one device; a trial resumed at step ``k`` of ``n`` trained
  ``n - k`` steps in that time, so it counts ``train_seconds * n / (n - k)``.

A metric that cannot be read is None.

    >>> values(Objectives(("best_eval", "gpu_seconds")), trial.user_attrs)  # doctest: +SKIP
    [2.4011, 31.2]
"""

from __future__ import annotations

from sweep.schema.objectives import Objectives
from sweep.study import trial_attrs as attrs


def metric_value(name: str, recorded: dict) -> float | None:
    """The value of metric ``name`` for a trial whose user attributes are ``recorded`` (see the module docstring)."""
    kept = recorded.get(attrs.KEEP_ADAPTER, "last")
    if name == "last_eval":
        return recorded.get(attrs.EVAL_LOSS) if kept == "last" else None
    if name == "best_eval":
        return recorded.get(attrs.ADAPTER_EVAL_LOSS) if kept == "best_eval" else None
    if name == "chrf":
        return recorded.get(attrs.CHRF)
    if name == "gpu_seconds":
        return gpu_seconds(recorded)
    raise ValueError(f"unknown metric {name!r}")


def gpu_seconds(recorded: dict) -> float | None:
    """Training seconds on the trial's one device, those of the steps before a resume estimated at its pace."""
    seconds, steps = recorded.get(attrs.TRAIN_SECONDS), recorded.get(attrs.STEPS)
    if seconds is None or not steps:
        return None
    trained = steps - recorded.get(attrs.RESUMED_FROM_STEP, 0)
    return seconds * steps / trained if trained > 0 else None


def values(objectives: Objectives, recorded: dict) -> list[float | None]:
    """The trial's value for each metric of ``objectives``, in order (None where it cannot be read)."""
    return [metric_value(name, recorded) for name in objectives.names]


def carried_values(trial, old: Objectives, new: Objectives) -> list[float] | None:
    """The values of a finished trial of a study scored on ``old`` for a study scored on ``new``; None if one
    cannot be known. A metric of both keeps the trial's own value; the others are read as in :func:`values`."""
    found = []
    for name in new.names:
        value = trial.values[old.names.index(name)] if name in old.names and trial.values else \
            metric_value(name, trial.user_attrs)
        if value is None:
            return None
        found.append(value)
    return found
