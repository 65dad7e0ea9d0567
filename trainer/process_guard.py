"""Two guards that keep one trial folder written by one live trainer.

``exit_with_parent``: the trainer ends itself (and its process group) when the orchestrator that
started it dies, even by SIGKILL, which gives the orchestrator no chance to stop it. Without it a
resumed study would retry the trial while the orphan still trains in the same folder.

``hold_trial_folder``: the trainer holds an exclusive lock on its trial folder for its whole life,
so a retry of the trial waits until the previous trainer is really gone before it reads or writes
checkpoints there. The kernel drops the lock when the process dies, however it dies.
"""

from __future__ import annotations

import fcntl
import os
import signal
import threading
import time
from pathlib import Path
from typing import IO

from trainer.trial_folder import LOCK_FILE

PARENT_POLL_SECONDS = 0.5


class FolderBusy(RuntimeError):
    """Another trainer still holds the trial folder."""


def exit_with_parent() -> None:
    """Start a daemon thread that kills this process group once the parent process has gone."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        # the orchestrator starts each trainer as a process-group leader: take its children along;
        # a trainer started by hand from a shell is not a leader and must not kill the shell's group
        if os.getpgrp() == os.getpid():
            os.killpg(os.getpgrp(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def hold_trial_folder(folder: Path, wait_seconds: float) -> IO:
    """Lock ``folder`` for this process, waiting up to ``wait_seconds`` for a previous holder to die.

    Returns the open lock file: the lock lasts as long as it stays open (keep a reference).
    """
    folder.mkdir(parents=True, exist_ok=True)
    lock = open(folder / LOCK_FILE, "w")
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return lock
        except BlockingIOError:
            if time.monotonic() > deadline:
                lock.close()
                raise FolderBusy(f"another trainer still writes {folder} after {wait_seconds:g} s") from None
            time.sleep(0.2)
