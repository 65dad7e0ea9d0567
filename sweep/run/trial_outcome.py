"""What a trial's end becomes in Optuna: its value (COMPLETE), ``TrialPruned``, or a failure with a reason.

:func:`conclude` turns the trainer's :class:`~trainer.events.Result` into the trial's outcome and
records what the trainer measured as user attributes (:mod:`sweep.study.trial_attrs`):

- ``ok`` with a complete adapter folder: COMPLETE with its value for each metric of the study's
  objective (:mod:`sweep.study.objective_values`; by default the final eval loss), the adapter's path
  recorded; ``ok`` without an adapter, or without a value the objective needs, is a crash;
- ``stopped``: PRUNED;
- ``oom``, ``error``: FAIL with a ``fail_reason`` (``oom``, ``timeout``, ``crash: <last error line>``),
  raised as :class:`TrialFailed`, and the study goes on;
- ``bad_input``: FAIL, raised as a :class:`~sweep.errors.UserError` that stops the run (every trial
  would meet the same data or model).

A trial stopped by Ctrl-C or SIGTERM ends as :class:`Interrupted` instead (see :func:`interrupted`).
"""

from __future__ import annotations

from pathlib import Path

import optuna

from sweep.errors import UserError
from sweep.run.progress import ProgressView
from sweep.schema.objectives import Objectives
from sweep.study import trial_attrs as attrs
from sweep.study.objective_values import values
from trainer.events import Result
from trainer.trial_folder import adapter_complete


class TrialFailed(Exception):
    """A trial ended without a result; the message is its ``fail_reason``."""


class Interrupted(KeyboardInterrupt):
    """The orchestrator was asked to stop (Ctrl-C or SIGTERM) while this trial ran."""


def interrupted(trial: optuna.Trial) -> Interrupted:
    """Record ``trial`` as interrupted (so it is retried) and return the exception to raise."""
    trial.set_user_attr(attrs.FAIL_REASON, attrs.INTERRUPTED)
    return Interrupted()


def conclude(trial: optuna.Trial, result: Result, progress: ProgressView, study_path: Path,
             objectives: Objectives) -> float | list[float]:
    """Record ``result`` on ``trial`` and return its value (a list of values for several metrics), or raise
    its outcome (see the module docstring)."""
    for key in attrs.RESULT_FIELDS:
        value = getattr(result, key)
        if value is not None:
            trial.set_user_attr(key, value)
    if result.samples:
        trial.set_user_attr(attrs.SAMPLES, result.samples)
    if result.status == "ok" and not (result.adapter_path and adapter_complete(result.adapter_path)):
        result = Result(status="error", reason=f"crash: the trainer reported an adapter at {result.adapter_path} "
                                               "that is missing or incomplete")
    if result.status == "ok":
        found = values(objectives, trial.user_attrs)
        missing = [label for label, value in zip(objectives.labels, found, strict=True) if value is None]
        if missing:
            result = Result(status="error", reason=f"crash: the trainer's result has no {', '.join(missing)}")
    if result.status == "ok":
        trial.set_user_attr(attrs.ADAPTER_PATH, result.adapter_path)
        progress.trial_finished(trial.number, "COMPLETE", found if objectives.multi else found[0])
        return found if objectives.multi else found[0]
    if result.status == "stopped":
        progress.trial_finished(trial.number, "PRUNED", None)
        raise optuna.TrialPruned()
    reason = result.reason or result.status
    if result.status == "oom":
        trial.set_user_attr(attrs.FAIL_DETAIL, reason)
        reason = "oom"
    trial.set_user_attr(attrs.FAIL_REASON, reason)
    progress.trial_finished(trial.number, "FAIL", None, reason)
    if result.status == "bad_input":
        raise UserError(f"{study_path}: trial {trial.number} cannot run: {reason}")
    raise TrialFailed(reason)
