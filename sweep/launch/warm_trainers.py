"""Warm trainer workers, so that trials after the first skip the trainer's start-up.

A worker is a ``python -m trainer.worker`` process that has already imported the training stack (on a
GPU, ``import unsloth`` alone takes 30 to 40 s). Workers are kept per device (``CUDA_VISIBLE_DEVICES``
is fixed when a process starts); a trial is handed to an idle one as a JSON line on its stdin: the
``spec.json`` path and the trial's own environment variables.

:class:`WarmTrainerPool` is one of the two launchers of :mod:`sweep.launch.trainer_launch`, and
:class:`WorkerTrial` its :class:`~sweep.launch.trainer_launch.TrainerHandle` (poll, events, request_stop,
kill), "finished" meaning the trial's result was written. A worker that
was killed, died, or announced in the result that it exits (unclean trial, leaked GPU memory, trial
quota used) is not reused: a replacement is started at once, so it imports while the next trial is
being sampled.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from sweep.launch.trainer_process import PROJECT_ROOT, child_env, kill_group, last_line, trial_env
from trainer.env_contract import DEVICE_ENV
from trainer.events import EventReader, Result
from trainer.trial_folder import EVENTS_FILE, LOG_FILE, STOP_FILE


def send_request(popen: subprocess.Popen, spec_path: Path, env: dict[str, str]) -> None:
    """Hand a trial to a worker: one JSON line on its stdin, the spec's path and the trial's own variables."""
    request = {"spec": str(spec_path), "env": {k: v for k, v in env.items() if k != DEVICE_ENV}}
    popen.stdin.write((json.dumps(request) + "\n").encode())
    popen.stdin.flush()


class WarmTrainer:
    """One ``python -m trainer.worker`` process, in its own process group."""

    def __init__(self, folder: Path, device: str | None, backend: str, max_trials: int, max_leak_mb: float) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.device = device
        self.log_path = folder / LOG_FILE
        env = trial_env(folder)  # compile caches per worker: one trial at a time writes them
        if device is not None:
            env[DEVICE_ENV] = device
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "trainer.worker", "--backend", backend, "--max-trials", str(max_trials),
                 "--max-leak-mb", str(max_leak_mb), "--folder", str(folder)],
                stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, env=child_env(env),
                cwd=PROJECT_ROOT, start_new_session=True,
            )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def submit(self, spec_path: Path, env: dict[str, str]) -> None:
        send_request(self.popen, spec_path, env)

    def kill(self, grace_seconds: float = 5.0) -> None:
        kill_group(self.popen, grace_seconds)


class WorkerTrial:
    """A trial running in a warm worker: a :class:`~sweep.launch.trainer_launch.TrainerHandle`."""

    waits_to_join = False

    def __init__(self, worker: WarmTrainer, trial_dir: Path, spec_path: Path, env: dict[str, str]) -> None:
        self.worker = worker
        self.trial_dir = Path(trial_dir)
        self.log_path = self.trial_dir / LOG_FILE
        self.events = EventReader(self.trial_dir / EVENTS_FILE)  # the objective's
        self._watch = EventReader(self.trial_dir / EVENTS_FILE)  # this handle's own, for the result
        self._result: Result | None = None
        self.killed = False
        self.started = time.time()
        worker.submit(spec_path, env)

    @property
    def pid(self) -> int:
        return self.worker.popen.pid

    def poll(self) -> int | None:
        """0 once the trial's result is written; the worker's exit code if it died first; else None."""
        if self.result() is not None:
            return 0
        code = self.worker.popen.poll()
        if code is not None and self.result() is not None:  # written just before the worker ended
            return 0
        return code

    def result(self) -> Result | None:
        """The trial's result event, once the worker has written it."""
        if self._result is None:
            self._result = next((e for e in self._watch.read_new() if isinstance(e, Result)), None)
        return self._result

    def request_stop(self) -> None:
        (self.trial_dir / STOP_FILE).touch()

    def kill(self, grace_seconds: float = 5.0) -> None:
        self.killed = True
        self.worker.kill(grace_seconds)

    def last_log_line(self) -> str:
        return last_line(self.log_path)

    def lost_for_another(self) -> bool:
        return False  # its trainer runs this trial alone


class WarmTrainerPool:
    """Idle warm workers per device, a :class:`~sweep.launch.trainer_launch.Launcher`; thread-safe."""

    def __init__(self, folder: Path, backend: str, max_trials: int, max_leak_mb: float,
                 stopping: threading.Event) -> None:
        self.folder = Path(folder)
        self.stopping = stopping  # once set, no worker is started or replaced
        self.backend, self.max_trials, self.max_leak_mb = backend, max_trials, max_leak_mb
        self._idle: dict[str | None, list[WarmTrainer]] = {}
        self._lock = threading.Lock()
        self._started = 0

    def prewarm(self, device: str | None) -> None:
        """Start a worker for ``device`` now, so the first trial placed there finds it importing or ready."""
        if self.stopping.is_set():
            return
        with self._lock:
            self._idle.setdefault(device, []).append(self._new(device))

    def _new(self, device: str | None) -> WarmTrainer:
        self._started += 1
        return WarmTrainer(self.folder / f"worker-{self._started:04d}", device, self.backend, self.max_trials,
                           self.max_leak_mb)

    def start_trial(self, trial_dir: Path, spec_path: Path, env: dict[str, str]) -> WorkerTrial:
        device = env.get(DEVICE_ENV)
        with self._lock:
            idle = self._idle.setdefault(device, [])
            while idle and not idle[-1].alive():
                idle.pop()
            worker = idle.pop() if idle else self._new(device)
        return WorkerTrial(worker, trial_dir, spec_path, env)

    def finished(self, trial: WorkerTrial) -> None:
        """Return the worker for reuse, or replace it if it was killed, died or announced its exit."""
        worker = trial.worker
        result = trial.result()
        reusable = not trial.killed and worker.alive() and result is not None and not result.worker_exits
        if not reusable and worker.alive() and (trial.killed or result is None):
            worker.kill(grace_seconds=2.0)
        if not reusable and self.stopping.is_set():
            return
        with self._lock:
            self._idle.setdefault(worker.device, []).append(worker if reusable else self._new(worker.device))

    def close(self) -> None:
        """End every idle worker now (one may still be importing, so it is not asked, but stopped)."""
        with self._lock:
            workers = [w for idle in self._idle.values() for w in idle]
            self._idle.clear()
        for worker in workers:
            worker.kill(grace_seconds=2.0)

