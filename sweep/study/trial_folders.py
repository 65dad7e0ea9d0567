"""Which study the trial folders under ``runs/NAME/trials`` belong to, and starting over.

A runs folder outlives its database when a user deletes ``study.db``, replaces it, or points
``--storage`` elsewhere. Its trial folders then belong to no trial of the study about to run, and
running over them would mix two studies' files. ``run`` therefore refuses such a folder in one line,
before anything is created, and ``run --fresh`` moves the old folder aside
(``runs/NAME.old-YYYYmmdd-HHMMSS``) to start over.

Each trial folder's ``spec.json`` names the study id it was made under (:mod:`sweep.study.study_versions`);
folders made before ids existed are matched by the ``trial_dir`` recorded on the study's trials.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from sweep.errors import UserError
from sweep.study.storage import sqlite_path
from trainer.trial_folder import SPEC_FILE


def trial_folders(folder: Path) -> list[Path]:
    """The trial folders that hold a spec (a folder made but never started holds nothing to lose)."""
    trials = Path(folder) / "trials"
    return sorted(p for p in trials.glob("*") if (p / SPEC_FILE).is_file()) if trials.is_dir() else []


def foreign_folders(folders: list[Path], uids: set[str], known_dirs: set[str]) -> list[Path]:
    """The folders of ``folders`` made under none of ``uids`` and recorded on no trial (``known_dirs``)."""
    foreign = []
    for path in folders:
        try:
            uid = json.loads((path / SPEC_FILE).read_text()).get("study_uid")
        except (OSError, ValueError):
            uid = None
        if uid in uids or (uid is None and str(path) in known_dirs):
            continue
        foreign.append(path)
    return foreign


def refuse_foreign(study_path: Path, name: str, folder: Path, foreign: list[Path], where: str) -> None:
    if foreign:
        shown = ", ".join(p.name for p in foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise UserError(f"{study_path}: {folder / 'trials'} holds {len(foreign)} trial folder(s) ({shown}) of no trial "
                        f"of study {name!r} in {where}; start over with `python -m sweep run --study {name} --fresh` "
                        f"(moves {folder} aside), or give another --runs-dir")


def study_exists(url: str, name: str) -> bool:
    """Whether the storage at ``url`` already holds the study ``name``, without creating anything.

    Optuna's storage would create its tables on opening: several workers starting on a new database at
    once then race to create the same tables (outside the creation lock of :func:`sweep.study.storage.open_study`).
    """
    path = sqlite_path(url)
    if path is not None:
        if not path.is_file() or path.stat().st_size == 0:
            return False
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
                return db.execute("SELECT 1 FROM studies WHERE study_name = ?", (name,)).fetchone() is not None
        except sqlite3.Error:
            return False  # not a study database: opening it reports that
    import sqlalchemy as sa

    from sweep.study.storage import database

    with database(url) as engine, engine.connect() as connection:
        if not sa.inspect(connection).has_table("studies"):
            return False
        query = sa.text("SELECT 1 FROM studies WHERE study_name = :name")
        return connection.execute(query, {"name": name}).first() is not None


def start_over(folder: Path, url: str, name: str, default_url: str) -> Path | None:
    """``--fresh``: move the study's folder aside (its SQLite database with it); returns where it went."""
    if url != default_url and study_exists(url, name):
        raise UserError(f"--fresh: the study {name!r} lives on in {url}, outside {folder}; delete it first "
                        f"(`optuna delete-study --storage URL --study-name {name}`) or give the study another name:")
    if not folder.exists():
        return None
    aside = folder.with_name(f"{folder.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
    folder.rename(aside)
    return aside
