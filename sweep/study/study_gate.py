"""A lock that all workers of one study share: one at a time counts the trials and starts the next.

``n_trials`` is met exactly only if no two workers both see "one trial to go" and both start one.
Every worker (every thread of every process, on every host) therefore takes this gate around
"fail stale trials, count finished and running trials, ask Optuna for a new one".

On PostgreSQL the gate is a session-level advisory lock, which the server drops when the holder's
connection dies. On SQLite (one host by nature) it is an ``flock`` on a file in the study's folder,
which the kernel drops when the holder dies. Other storages get the file lock in the study's
folder, which works across hosts only where that folder's file system honours ``flock``.
"""

from __future__ import annotations

import threading
from contextlib import ExitStack
from pathlib import Path

from sweep.study.optuna_internals import rdb_engine
from sweep.study.storage import advisory_lock, file_lock

GATE_FILE = ".gate.lock"


class StudyGate:
    """Context manager: ``with gate:`` holds the study's lock (threads of this process take turns)."""

    def __init__(self, optuna_study, url: str, folder: Path) -> None:
        self._threads = threading.Lock()
        self._url = url
        self._engine = rdb_engine(optuna_study)
        self._name = f"lora-sweep:gate:{optuna_study.study_name}"
        self._path = Path(folder) / GATE_FILE
        self._held: ExitStack | None = None

    def __enter__(self) -> StudyGate:
        stack = ExitStack()
        stack.enter_context(self._threads)
        try:
            stack.enter_context(advisory_lock(self._engine, self._name) if self._url.startswith("postgresql")
                                else file_lock(self._path))
        except BaseException:
            stack.close()
            raise
        self._held = stack
        return self

    def __exit__(self, *exc) -> None:
        held, self._held = self._held, None
        held.close()
