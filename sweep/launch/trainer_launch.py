"""Starting a trial's trainer: the handle the objective follows, and the two launchers that hand one out.

A trial runs in a fresh ``python -m trainer`` process (:class:`ColdLauncher`, whose handle is a
:class:`~sweep.launch.trainer_process.TrainerProcess`), in a warm worker that imported the training stack
before (:class:`~sweep.launch.warm_trainers.WarmTrainerPool`, whose handle is a
:class:`~sweep.launch.warm_trainers.WorkerTrial`), or beside the other trials of its device in a group
worker (:class:`~sweep.launch.group_workers.GroupWorkerPool`, ``execution.backend: grouped``). The handles play one role, :class:`TrainerHandle`, and the
launchers another, :class:`Launcher`, so the objective never asks which kind it has::

    launcher = launcher_for(study.config, runs / "workers", stopping)
    launcher.prewarm(None)                 # a warm pool starts a worker now; a cold launcher does nothing
    handle = launcher.start_trial(trial_dir, trial_dir / "spec.json", lease.env())
    while handle.poll() is None:
        for event in handle.events.read_new(): ...
    launcher.finished(handle)              # a warm pool reuses or replaces the worker
    launcher.close()
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Protocol

from sweep.launch.group_workers import GroupWorkerPool
from sweep.launch.trainer_process import TrainerProcess
from sweep.launch.warm_trainers import WarmTrainerPool
from trainer.events import EventReader


class TrainerHandle(Protocol):
    """A trial's running trainer, as the objective follows it."""

    log_path: Path  # the trial's trainer.log
    events: EventReader  # the trial's events.jsonl, read by the objective alone
    started: float  # time.time() when the trial was handed to the trainer
    killed: bool
    waits_to_join: bool  # handed to a group worker, it may wait there before it trains (its first event)

    def poll(self) -> int | None:
        """None while the trial runs; then its exit code (0 once a warm worker wrote the result)."""

    def request_stop(self) -> None:
        """Ask the trainer to stop at its next step (pruned): it still reports and ends cleanly."""

    def kill(self, grace_seconds: float = 5.0) -> None:
        """End the trainer and every process it started."""

    def last_log_line(self) -> str:
        """The last non-empty line of the trial's log, for a fail_detail."""

    def lost_for_another(self) -> bool:
        """Whether the trial ended only because its trainer was stopped for another trial (a group's)."""


class Launcher(Protocol):
    """Hands out a :class:`TrainerHandle` per trial; thread-safe."""

    def prewarm(self, device: str | None) -> None:
        """Get ready for a trial on ``device`` before one is placed there."""

    def start_trial(self, trial_dir: Path, spec_path: Path, env: dict[str, str]) -> TrainerHandle:
        """Start the trial of ``spec_path``, with ``env`` (its device and placement) added to its environment."""

    def finished(self, handle: TrainerHandle) -> None:
        """The objective is done with ``handle`` (its trainer ended or was killed)."""

    def close(self) -> None:
        """End whatever the launcher keeps between trials (running trials end with their threads)."""


class ColdLauncher:
    """A fresh ``python -m trainer`` process per trial: nothing is started ahead, kept or ended afterwards."""

    def prewarm(self, device: str | None) -> None:
        pass

    def start_trial(self, trial_dir: Path, spec_path: Path, env: dict[str, str]) -> TrainerProcess:
        return TrainerProcess(trial_dir, spec_path, env)

    def finished(self, handle: TrainerHandle) -> None:
        pass

    def close(self) -> None:
        pass


def launcher_for(config, folder: Path, stopping: threading.Event,
                 at_once: dict[str | None, int] | None = None) -> Launcher:
    """The launcher a study file's ``config`` asks for (its ``execution`` section); workers keep their logs under
    ``folder``; ``at_once``: the trials a group worker trains at once on each device (``--trials-per-gpu``)."""
    execution = config.execution
    if execution.backend == "grouped":
        return GroupWorkerPool(folder, config.lora.target_modules, execution.group_matmul, stopping, at_once,
                               execution.group_cuda_graphs)
    if not execution.warm_workers:
        return ColdLauncher()
    return WarmTrainerPool(folder, execution.backend, execution.worker_max_trials, execution.worker_max_leak_mb,
                           stopping)
