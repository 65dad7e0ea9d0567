"""Where a study lives: its folder, its storage URL, and opening it safely from many workers.

By default a study named NAME keeps everything under ``runs/NAME/``: ``study.db`` (SQLite, Optuna's
RDB storage, in WAL mode with a busy timeout so a kill at any moment leaves it readable) and one
folder per trial under ``trials/``. ``--storage URL`` puts the study elsewhere (PostgreSQL for many
hosts); trial folders stay under ``runs/NAME/``, which must then be shared by the hosts.

Creating the study is serialised: Optuna's ``create_study`` on a new database from several
processes at once can fail (SQLite: duplicate alembic rows, "table already exists"; PostgreSQL:
"type studydirection already exists"). On SQLite a file lock beside the database does it, on
PostgreSQL an advisory lock taken on a connection of its own; other databases get a file lock in
the temporary folder, which serialises the workers of one host only.

A worker opens the study with heartbeats on: each running trial's worker records a heartbeat every
``heartbeat_seconds``, and a RUNNING trial without one for ``stale_after_seconds`` belongs to a dead
worker (see ``sweep.retries``).
"""

from __future__ import annotations

import fcntl
import sqlite3
import tempfile
import zlib
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
def _creation_lock(url: str):
    """Held while the storage's tables and the study are created (see the module docstring)."""
    if url.startswith("postgresql"):
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        try:
            engine = sqlalchemy.create_engine(url, poolclass=NullPool)
            engine.connect().close()
        except Exception as e:  # bad URL, refused connection, wrong password, missing driver
            raise UserError(f"--storage {_redact(url)}: cannot open the study storage: {_first_line(e)}") from e
        try:
            with advisory_lock(engine, f"lora-sweep:create:{url.rsplit('/', 1)[-1]}"):
                yield
        finally:
            engine.dispose()
        return
    path = sqlite_path(url)
    with file_lock(path.parent / ".create.lock" if path else
                   Path(tempfile.gettempdir()) / f"lora-sweep-create-{zlib.crc32(url.encode()):08x}.lock"):
        yield


@contextmanager
def file_lock(path: Path):
    """An exclusive ``flock`` on ``path`` (created with its folder if missing); the kernel drops it if we die."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def advisory_lock(engine, name: str):
    """A PostgreSQL session-level advisory lock named ``name``, on a connection of ``engine`` held meanwhile;
    the server drops it if the connection dies with its process."""
    from sqlalchemy import text

    key = zlib.crc32(name.encode())
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        connection.commit()  # end the implicit transaction: the session-level lock stays
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            connection.commit()


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
        raise UserError(f"--storage {_redact(url)}: cannot open the study storage: {_first_line(e)}") from e


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def open_study(url: str, name: str, sampler=None, pruner=None, create: bool = True,
               heartbeat: tuple[int, int] | None = None):
    """Load the study (creating it once, under a lock, if ``create``); ``heartbeat`` as in :func:`rdb_storage`."""
    import optuna

    path = sqlite_path(url)
    if not create:
        if path is not None and not path.exists():
            raise UserError(f"no study database at {path}: run `python -m sweep run --study {name}` first")
        try:
            return optuna.load_study(study_name=name, storage=rdb_storage(url, heartbeat), sampler=sampler,
                                     pruner=pruner)
        except KeyError:
            raise UserError(f"no study named {name!r} in {_redact(url)}") from None
    with _creation_lock(url):
        if path is not None:
            _enable_wal(path)
        return optuna.create_study(storage=rdb_storage(url, heartbeat), study_name=name, sampler=sampler,
                                   pruner=pruner, direction="minimize", load_if_exists=True)
