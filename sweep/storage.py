"""Where a study lives: its folder, its storage URL, and opening it safely from many workers.

By default a study named NAME keeps everything under ``runs/NAME/``: ``study.db`` (SQLite, Optuna's
RDB storage, in WAL mode with a busy timeout so a kill at any moment leaves it readable) and one
folder per trial under ``trials/``. ``--storage URL`` puts the study elsewhere (PostgreSQL for many
hosts); trial folders stay under ``runs/NAME/``, which must then be shared by the hosts.

Creating the study is serialised with a file lock: Optuna's ``create_study`` on a new SQLite file
from several processes at once can fail (duplicate alembic rows, "table already exists").

A worker opens the study with heartbeats on: each running trial's worker records a heartbeat every
``heartbeat_seconds``, and a RUNNING trial without one for ``stale_after_seconds`` belongs to a dead
worker (see ``sweep.retries``).
"""

from __future__ import annotations

import fcntl
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

from sweep.errors import UserError

SQLITE_BUSY_SECONDS = 60


def study_dir(runs_dir: Path, name: str) -> Path:
    return Path(runs_dir).resolve() / name


def default_storage_url(runs_dir: Path, name: str) -> str:
    return f"sqlite:///{study_dir(runs_dir, name) / 'study.db'}"


def sqlite_path(url: str) -> Path | None:
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


@contextmanager
def _creation_lock(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".create.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _enable_wal(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path, timeout=SQLITE_BUSY_SECONDS) as db:
        db.execute("PRAGMA journal_mode=WAL")


def rdb_storage(url: str, heartbeat: tuple[int, int] | None = None):
    """Optuna's RDB storage for ``url``; ``heartbeat`` is (interval, grace period) in seconds."""
    import optuna
    from optuna.storages import RDBStorage

    engine_kwargs = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_SECONDS}
    kwargs = {"heartbeat_interval": heartbeat[0], "grace_period": heartbeat[1]} if heartbeat else {}
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the sweep prints its own lines
    try:
        return RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
    except Exception as e:  # sqlalchemy's errors for bad URLs, refused connections, wrong passwords
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"--storage {_redact(url)}: cannot open the study storage: {first}") from e


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def open_study(url: str, name: str, folder: Path, sampler=None, pruner=None, create: bool = True,
               heartbeat: tuple[int, int] | None = None):
    """Load the study (creating it once, under a lock, if ``create``); ``heartbeat`` as in :func:`rdb_storage`."""
    import optuna

    path = sqlite_path(url)
    if path is not None:
        if not create and not path.exists():
            raise UserError(f"no study database at {path}: run `python -m sweep run --study {name}` first")
        if create:
            with _creation_lock(path.parent):
                _enable_wal(path)
                storage = rdb_storage(url, heartbeat)
                return optuna.create_study(storage=storage, study_name=name, sampler=sampler, pruner=pruner,
                                           direction="minimize", load_if_exists=True)
    storage = rdb_storage(url, heartbeat)
    if not create:
        try:
            return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        except KeyError:
            raise UserError(f"no study named {name!r} in {_redact(url)}") from None
    for attempt in range(5):  # other workers may be creating it right now
        try:
            return optuna.create_study(storage=storage, study_name=name, sampler=sampler, pruner=pruner,
                                       direction="minimize", load_if_exists=True)
        except Exception:
            if attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")
