"""A lock that all workers of one study share: one at a time counts the trials and starts the next.

``n_trials`` is met exactly only if no two workers both see "one trial to go" and both start one.
Every worker (every thread of every process, on every host) therefore takes this gate around
"fail stale trials, count finished and running trials, ask Optuna for a new one".

On PostgreSQL the gate is a session-level advisory lock, which the server drops when the holder's
connection dies. On SQLite (one host by nature) it is an ``flock`` on a file beside the database,
which the kernel drops when the holder dies. Other storages get the file lock in the study's
folder, which works across hosts only where that folder's file system honours ``flock``.
"""

from __future__ import annotations

import fcntl
import threading
import zlib
from pathlib import Path

GATE_FILE = ".gate.lock"


class StudyGate:
    """Context manager: ``with gate:`` holds the study's lock (threads of this process take turns)."""

    def __init__(self, optuna_study, url: str, folder: Path) -> None:
        self._threads = threading.Lock()
        self._postgres = url.startswith("postgresql")
        self._engine = getattr(optuna_study._storage, "_backend", optuna_study._storage).engine
        self._key = zlib.crc32(f"lora-sweep:{optuna_study.study_name}".encode())  # advisory lock id
        self._path = Path(folder) / GATE_FILE
        self._held = None

    def __enter__(self) -> StudyGate:
        self._threads.acquire()
        try:
            self._held = self._lock_postgres() if self._postgres else self._lock_file()
        except BaseException:
            self._threads.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self._postgres:
                from sqlalchemy import text

                self._held.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self._key})
                self._held.close()
            else:
                fcntl.flock(self._held, fcntl.LOCK_UN)
                self._held.close()
        finally:
            self._held = None
            self._threads.release()

    def _lock_postgres(self):
        from sqlalchemy import text

        connection = self._engine.connect()
        try:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": self._key})
            connection.commit()  # end the implicit transaction; the session-level lock stays
        except BaseException:
            connection.close()
            raise
        return connection

    def _lock_file(self):
        self._path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self._path, "w")
        fcntl.flock(handle, fcntl.LOCK_EX)
        return handle
