"""Following one running trainer until it ends, and what its end was: the objective's event loop.

:func:`follow` polls the trainer's handle (:class:`~sweep.launch.trainer_launch.TrainerHandle`) and reads
its events as they are appended: the set-up, phases and progress go to the live view, each evaluation to
Optuna through an :class:`~sweep.run.eval_reporter.EvalReporter` (which may prune: the trainer is asked to
stop, and killed if it has not within ``PRUNE_GRACE_SECONDS``). It also enforces the study's
per-trial time limit and ends the trainer at once when the run is stopping (Ctrl-C, SIGTERM). It
returns the trainer's :class:`~trainer.events.Result`, or one made up for a trainer that ended
without reporting (killed, timed out, broken before it could); a trial stopped by Ctrl-C raises
:class:`~sweep.run.trial_outcome.Interrupted`.
"""

from __future__ import annotations

import signal
import threading
import time

import optuna

from sweep.launch.trainer_launch import TrainerHandle
from sweep.run.eval_reporter import EvalReporter
from sweep.run.progress import ProgressView
from sweep.run.trial_outcome import interrupted
from sweep.study import trial_attrs as attrs
from trainer.events import Evaluation, Phase, Progress, Result, Setup

POLL_SECONDS = 0.2
PRUNE_GRACE_SECONDS = 60
INTERRUPT_GRACE_SECONDS = 2.0  # SIGTERM, then SIGKILL: Ctrl-C must end the run within a few seconds


def follow(trial: optuna.Trial, handle: TrainerHandle, progress: ProgressView, stopping: threading.Event,
           timeout_minutes: float | None) -> Result:
    """Follow ``handle`` to its end; returns the trial's result (see the module docstring)."""
    reporter = EvalReporter(trial)
    result: Result | None = None
    pruned_at: float | None = None
    # the time limit counts from when a trainer took the trial: at once, or when it joined its group
    taken = None if handle.waits_to_join else handle.started
    while True:
        exited = handle.poll() is not None
        for event in handle.events.read_new():
            taken = taken or time.time()
            if isinstance(event, Setup):
                trial.set_user_attr(attrs.BACKEND, event.backend)
                trial.set_user_attr(attrs.DEVICE, event.device)
                trial.set_user_attr(attrs.RESUMED_FROM_STEP, event.resumed_from_step)
                progress.trial_step(trial.number, 0, event.total_steps)
            elif isinstance(event, Phase):
                progress.trial_phase(trial.number, event.name)
            elif isinstance(event, Progress):
                progress.trial_step(trial.number, event.step, event.total_steps, event.loss)
            elif isinstance(event, Evaluation):
                if reporter.evaluated(event.step, event.eval_loss, event.point):
                    handle.request_stop()
                    pruned_at = time.time()
            elif isinstance(event, Result):
                result = event
        if exited:
            break
        if stopping.is_set():
            handle.kill(grace_seconds=INTERRUPT_GRACE_SECONDS)
            raise interrupted(trial)
        if timeout_minutes and taken is not None and time.time() - taken > timeout_minutes * 60:
            handle.kill()
            trial.set_user_attr(attrs.FAIL_DETAIL, f"still running after the time limit of {timeout_minutes:g} min")
            return Result(status="error", reason="timeout")
        if pruned_at and time.time() - pruned_at > PRUNE_GRACE_SECONDS:
            handle.kill()
            break
        time.sleep(POLL_SECONDS)
    trial.set_user_attr(attrs.EXIT_STATUS, handle.poll())
    trial.set_user_attr(attrs.WALL_SECONDS, round(time.time() - handle.started, 2))
    if stopping.is_set() and (result is None or result.status != "ok"):
        raise interrupted(trial)
    if pruned_at is not None:
        return result if result and result.status == "stopped" else Result(status="stopped", reason="pruned")
    if result is None and handle.lost_for_another():  # tried again, from its checkpoint, as after a Ctrl-C
        trial.set_user_attr(attrs.FAIL_DETAIL, "its group worker was stopped for another trial")
        raise interrupted(trial)
    if result is None:
        return died(trial, handle)
    return result


def died(trial: optuna.Trial, handle: TrainerHandle) -> Result:
    """The result of a trainer that ended without reporting one (killed, or broken before it could)."""
    code, last = handle.poll(), handle.last_log_line()
    trial.set_user_attr(attrs.FAIL_DETAIL, f"trainer exited with code {code}; last log line: {last}")
    if code is not None and code < 0:
        return Result(status="error", reason=f"crash: trainer killed by {signal.Signals(-code).name}")
    return Result(status="error", reason=f"crash: {last or f'trainer exited with code {code}'}")
