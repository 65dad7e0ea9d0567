"""Group workers: the trials placed on one device train together in one process on one shared base.

With ``execution.backend: grouped`` the trials that ``--trials-per-gpu`` places on a device are not
separate trainers: they are handed, as to a warm worker, to that device's ``python -m
trainer.group.serve`` process, which loads the base once and trains every trial it holds in one
stacked forward and backward a step (:mod:`trainer.group`). A trial joins at the next step and leaves
when it ends; each still writes its own folder, events and adapter, so the objective follows it as
any other.

A worker trains at most ``--trials-per-gpu`` trials at once, but is handed half as many more
(:func:`handed_over`): they wait in it to join at the next step a member leaves (not after the
orchestrator's round trip), and members that finished hold their results back until the samples of
several are generated in one batch (:mod:`trainer.group.parked`), when no waiting trial is left to
take a free place (and a quarter of the places' trials are parked, or the first has waited 16 steps).

The price is isolation: a crash or kill of the worker ends every trial in it (each fails with the
worker's last log line, and the next trial starts a new worker). Stopping one trial (pruning, its
time limit) writes its ``STOP`` file; only a trial that does not leave within the grace period takes
the worker down with it.

:class:`GroupWorkerPool` is a :class:`~sweep.launch.trainer_launch.Launcher`, :class:`GroupTrial`
its :class:`~sweep.launch.trainer_launch.TrainerHandle`.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from sweep.launch.trainer_process import PROJECT_ROOT, child_env, kill_group, trial_env
from sweep.launch.warm_trainers import WorkerTrial, send_request
from trainer.env_contract import DEVICE_ENV
from trainer.trial_folder import LOG_FILE

POLL_SECONDS = 0.2


def handed_over(capacity: dict[str | None, int]) -> dict[str | None, int]:
    """Trials placed on each device for a group worker that trains ``capacity[device]`` at once: half as many more
    (at least one) wait in it to join (and let the finished ones' samples wait for a larger batch)."""
    return {device: k + -(-k // 2) for device, k in capacity.items()}


class GroupWorker:
    """One ``python -m trainer.group.serve`` process for one device, in its own process group."""

    def __init__(self, folder: Path, device: str | None, targets: list[str], matmul: str,
                 max_live: int | None = None, cuda_graphs: bool = False) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.device = device
        self.log_path = folder / LOG_FILE
        env = trial_env(folder)
        if device is not None:
            env[DEVICE_ENV] = device
        self._lock = threading.Lock()
        self.stopped = False  # by the orchestrator (a trial of it past its time limit or not leaving when pruned)
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "trainer.group.serve", "--targets", ",".join(targets), "--matmul", matmul,
                 "--folder", str(folder), *(["--max-live", str(max_live)] if max_live else []),
                 *(["--cuda-graphs"] if cuda_graphs else [])],
                stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, env=child_env(env),
                cwd=PROJECT_ROOT, start_new_session=True,
            )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def submit(self, spec_path: Path, env: dict[str, str]) -> None:
        with self._lock:  # several trial threads hand trials to one worker
            send_request(self.popen, spec_path, env)

    def kill(self, grace_seconds: float = 5.0) -> None:
        self.stopped = True  # before it dies: its other trials see that it was stopped, not that it crashed
        kill_group(self.popen, grace_seconds)


class GroupTrial(WorkerTrial):
    """A trial inside a group worker: a warm worker's trial, but its log is the group's and stopping it spares
    the others."""

    waits_to_join = True  # handed over beyond the places, it joins when a member leaves

    def __init__(self, worker: GroupWorker, trial_dir: Path, spec_path: Path, env: dict[str, str]) -> None:
        super().__init__(worker, trial_dir, spec_path, env)
        self.log_path = worker.log_path  # the group's output is one log; the trial's lines are in it

    def kill(self, grace_seconds: float = 5.0) -> None:
        """Stop this trial; the whole worker only if the trial has not left it within ``grace_seconds``."""
        self.killed = True
        self.request_stop()
        deadline = time.time() + grace_seconds
        while time.time() < deadline:
            if self.poll() is not None:
                return
            time.sleep(POLL_SECONDS)
        self.worker.kill(grace_seconds)

    def lost_for_another(self) -> bool:
        """Whether it ended only because its worker was stopped for another of the worker's trials."""
        return not self.killed and self.worker.stopped


class GroupWorkerPool:
    """One group worker per device, started on demand and again after one died; thread-safe.

    ``max_live``: the trials each device's worker trains at once (the others handed over wait to join);
    a device it does not name has no limit."""

    def __init__(self, folder: Path, targets: list[str], matmul: str, stopping: threading.Event,
                 max_live: dict[str | None, int] | None = None, cuda_graphs: bool = False) -> None:
        self.folder = Path(folder)
        self.targets, self.matmul, self.stopping, self.cuda_graphs = targets, matmul, stopping, cuda_graphs
        self.max_live = max_live or {}
        self._workers: dict[str | None, GroupWorker] = {}
        self._lock = threading.Lock()
        self._started = 0

    def prewarm(self, device: str | None) -> None:
        if not self.stopping.is_set():
            self._worker(device)

    def _worker(self, device: str | None) -> GroupWorker:
        with self._lock:
            worker = self._workers.get(device)
            if worker is None or not worker.alive():
                self._started += 1
                worker = GroupWorker(self.folder / f"group-{self._started:04d}", device, self.targets, self.matmul,
                                     self.max_live.get(device), self.cuda_graphs)
                self._workers[device] = worker
            return worker

    def start_trial(self, trial_dir: Path, spec_path: Path, env: dict[str, str]) -> GroupTrial:
        return GroupTrial(self._worker(env.get(DEVICE_ENV)), trial_dir, spec_path, env)

    def finished(self, handle: GroupTrial) -> None:
        pass  # the worker stays for the next trial; a dead one is replaced when a trial next needs it

    def close(self) -> None:
        """End the workers: their stdin closes (a worker with no trial left exits), then they are stopped."""
        with self._lock:
            workers = list(self._workers.values())
            self._workers.clear()
        for worker in workers:
            try:
                worker.popen.stdin.close()
            except OSError:
                pass
            worker.kill(grace_seconds=2.0)
