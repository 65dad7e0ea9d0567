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

A study database file is looked at before Optuna opens it: an empty (0-byte), truncated or
non-SQLite file is a one-line error naming it, for ``run`` and the read-only commands alike, and
the read-only commands never create tables (a new schema written into a file that lost its own
would hide the loss). A new SQLite database is made under a temporary name and renamed into place,
so a run killed while creating it leaves no empty ``study.db`` behind.

A worker opens the study with heartbeats on: each running trial's worker records a heartbeat every
``heartbeat_seconds``, and a RUNNING trial without one for ``stale_after_seconds`` belongs to a dead
worker (see ``sweep.study.retries``).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import tempfile
import zlib
from contextlib import closing, contextmanager
from pathlib import Path

from sweep.errors import UserError

SQLITE_BUSY_SECONDS = 60
SQLITE_HEADER = b"SQLite format 3\x00"


def study_dir(runs_dir: Path, name: str) -> Path:
    return Path(runs_dir).resolve() / name


def default_storage_url(runs_dir: Path, name: str) -> str:
    return f"sqlite:///{study_dir(runs_dir, name) / 'study.db'}"


def sqlite_path(url: str) -> Path | None:
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


@contextmanager
def database(url: str):
    """A SQLAlchemy engine on ``url`` (no connection pool), checked by connecting; disposed afterwards.

    A URL that cannot be opened (bad URL, refused connection, wrong password, missing driver) is a UserError.
    """
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    try:
        engine = sqlalchemy.create_engine(url, poolclass=NullPool)
        engine.connect().close()
    except Exception as e:
        raise UserError(f"--storage {_redact(url)}: cannot open the study storage: {_first_line(e)}") from e
    try:
        yield engine
    finally:
        engine.dispose()


@contextmanager
def _creation_lock(url: str):
    """Held while the storage's tables and the study are created (see the module docstring)."""
    if url.startswith("postgresql"):
        with database(url) as engine, advisory_lock(engine, f"lora-sweep:create:{url.rsplit('/', 1)[-1]}"):
            yield
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
    if path.exists():
        with closing(sqlite3.connect(path, timeout=SQLITE_BUSY_SECONDS)) as db:
            db.execute("PRAGMA journal_mode=WAL")
        return
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with closing(sqlite3.connect(partial)) as db:
        db.execute("PRAGMA journal_mode=WAL")  # written into the file's header: it stays WAL after the rename
    os.replace(partial, path)


def sqlite_problem(path: Path) -> str | None:
    """Why the file at ``path`` cannot hold a study, or None (also when there is no file yet); reads only."""
    if not path.exists():
        return None
    if path.is_dir():
        return "is a folder, not a database file"
    if path.stat().st_size == 0:
        return "is empty (0 bytes), not a study database"
    with path.open("rb") as f:
        if not f.read(len(SQLITE_HEADER)) == SQLITE_HEADER:
            return "is not an SQLite database"
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                     timeout=SQLITE_BUSY_SECONDS)) as db:
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            tables = sorted(row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
    except sqlite3.DatabaseError as e:
        return f"is damaged or truncated (SQLite: {e})"
    if check != "ok":
        return f"is damaged (SQLite: {check})"
    if tables and "studies" not in tables:
        return f"is an SQLite database of something else (its tables: {', '.join(tables[:8])})"
    return None


def check_database_file(url: str, label: str, create: bool = True) -> None:
    """An existing SQLite file must be a sound database (see :func:`sqlite_problem`); else a UserError naming it."""
    path = sqlite_path(url)
    problem = sqlite_problem(path) if path is not None else None
    if problem:
        again = "move it aside to start the study afresh" if create else \
            "it is left as it is: restore it, or move it aside and run the study again"
        raise UserError(f"{label}: {problem}; {again}")


def _has_studies(path: Path) -> bool:
    with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=SQLITE_BUSY_SECONDS)) as db:
        return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'studies'").fetchone() is not None


def rdb_storage(url: str, heartbeat: tuple[int, int] | None = None, label: str | None = None,
                create_tables: bool = True):
    """Optuna's RDB storage for ``url``; ``heartbeat`` is (interval, grace period) in seconds.

    ``label`` names the storage in errors (default: ``--storage URL``); without ``create_tables`` a
    database lacking Optuna's tables is left as it is.
    """
    import optuna
    from optuna.storages import RDBStorage

    engine_kwargs = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_SECONDS}
    kwargs = {"heartbeat_interval": heartbeat[0], "grace_period": heartbeat[1]} if heartbeat else {}
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the sweep prints its own lines
    try:
        return RDBStorage(url, engine_kwargs=engine_kwargs, skip_table_creation=not create_tables, **kwargs)
    except Exception as e:  # sqlalchemy's errors for bad URLs, refused connections, wrong passwords
        raise UserError(f"{label or storage_label(url)}: cannot open the study storage: {_first_line(e)}") from e


def storage_label(url: str, given: bool = True) -> str:
    """How errors name a storage: the ``--storage`` URL the user gave (password hidden), or the database file."""
    path = sqlite_path(url)
    return f"--storage {_redact(url)}" if given or path is None else str(path)


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def open_study(url: str, name: str, sampler=None, pruner=None, create: bool = True,
               heartbeat: tuple[int, int] | None = None, label: str | None = None,
               directions: list[str] | None = None, metric_names: list[str] | None = None):
    """Load the study (creating it once, under a lock, if ``create``); ``heartbeat`` as in :func:`rdb_storage`.

    ``label`` names the storage in errors (default: ``--storage URL``). Without ``create`` nothing is
    written: a missing database, file or study is a UserError. ``directions`` and ``metric_names`` are
    those of a study created now (default: one metric, minimised, unnamed); an existing study keeps its
    own (Optuna fixes the directions at creation).
    """
    import optuna

    from sweep.study.optuna_internals import set_metric_names

    label = label or storage_label(url)
    path = sqlite_path(url)
    check_database_file(url, label, create)
    if not create:
        if path is not None and not path.exists():
            raise UserError(f"no study database at {path}: run `python -m sweep run --study {name}` first")
        if path is not None and not _has_studies(path):
            raise UserError(f"{label}: holds no study yet: run `python -m sweep run --study {name}` first")
        try:
            return optuna.load_study(study_name=name, storage=rdb_storage(url, heartbeat, label, create_tables=False),
                                     sampler=sampler, pruner=pruner)
        except KeyError:
            raise UserError(f"no study named {name!r} in {label.removeprefix('--storage ')}") from None
    with _creation_lock(url):
        if path is not None:
            _enable_wal(path)
        study = optuna.create_study(storage=rdb_storage(url, heartbeat, label), study_name=name, sampler=sampler,
                                    pruner=pruner, directions=directions or ["minimize"], load_if_exists=True)
        if metric_names and study.metric_names is None and not study.get_trials(deepcopy=False) \
                and [d.name.lower() for d in study.directions] == directions:
            set_metric_names(study, metric_names)  # a study created now: named before anyone reads it
        return study
