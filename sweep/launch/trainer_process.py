"""One ``python -m trainer`` subprocess: started in its own process group, watched, stopped or killed.

Its stdout and stderr go to the trial's ``trainer.log``; what the orchestrator needs comes from the
trial's ``events.jsonl``. Killing the whole process group means no child (a dataloader worker, a
compile worker) survives to hold a GPU. Each trainer gets its own compile caches (Unsloth, Triton,
TorchInductor) under the trial folder, so trials running at once never write the same cache files.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from trainer.events import EventReader
from trainer.trial_folder import COMPILE_CACHE_DIR, EVENTS_FILE, LOG_FILE, STOP_FILE

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIRS = {"UNSLOTH_COMPILE_LOCATION": "unsloth_compiled", "TRITON_CACHE_DIR": "triton",
              "TORCHINDUCTOR_CACHE_DIR": "inductor"}


def trial_env(trial_dir: Path) -> dict[str, str]:
    """Environment every trainer gets: per-trial caches, GPU indices in nvidia-smi's order."""
    env = {name: str(Path(trial_dir) / COMPILE_CACHE_DIR / sub) for name, sub in CACHE_DIRS.items()}
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # so CUDA_VISIBLE_DEVICES=N is nvidia-smi's GPU N
    return env


def cpu_threads_env(slots: int, environ=os.environ, cpus: int | None = None) -> dict[str, str]:
    """``OMP_NUM_THREADS`` for trainers when ``slots`` run at once: the CPUs shared out between them.

    As ``torchrun`` does for several processes per host: each trainer's torch would otherwise start
    a thread per CPU, and K x GPUs trainers would fight over the cores. A value the user set wins.
    """
    if slots <= 1 or "OMP_NUM_THREADS" in environ:
        return {}
    cpus = cpus or len(os.sched_getaffinity(0))
    return {"OMP_NUM_THREADS": str(max(1, cpus // slots))}


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment plus ``extra``, with the project importable by the child."""
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def kill_group(popen: subprocess.Popen, grace_seconds: float = 5.0) -> None:
    """SIGTERM the process group of ``popen``, then SIGKILL it if it has not exited within ``grace_seconds``."""
    for sig, wait in ((signal.SIGTERM, grace_seconds), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(popen.pid, sig)
        except ProcessLookupError:
            return
        try:
            popen.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def last_line(log_path: Path) -> str:
    """The last non-empty line of a log (at most 300 characters), or ''."""
    try:
        lines = [line for line in Path(log_path).read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1].strip()[:300] if lines else ""


class TrainerProcess:
    """A running trainer for one trial folder: the cold launcher's :class:`~sweep.launch.trainer_launch.TrainerHandle`."""

    waits_to_join = False

    def __init__(self, trial_dir: Path, spec_path: Path, env: dict[str, str] | None = None) -> None:
        self.trial_dir = Path(trial_dir)
        self.log_path = self.trial_dir / LOG_FILE
        self.events = EventReader(self.trial_dir / EVENTS_FILE)
        self.killed = False
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "trainer", str(spec_path)], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=child_env({**trial_env(self.trial_dir), **(env or {})}),
                cwd=self.trial_dir, start_new_session=True,
            )
        self.started = time.time()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def request_stop(self) -> None:
        """Ask the trainer to stop at its next step (it still reports and exits cleanly)."""
        (self.trial_dir / STOP_FILE).touch()

    def kill(self, grace_seconds: float = 5.0) -> None:
        """End the trainer and everything it started (its whole process group)."""
        self.killed = True
        kill_group(self.popen, grace_seconds)

    def last_log_line(self) -> str:
        return last_line(self.log_path)

    def lost_for_another(self) -> bool:
        return False  # its trainer runs this trial alone
