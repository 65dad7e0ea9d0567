"""Checks of the data and the folders made before a study is touched; each failure is a one-line UserError.

The data: :func:`trainer.data_check.check_data`, the same check the trainer makes (JSONL files are
read here: UTF-8, one known row format, non-empty train and eval sets); a folder must be a dataset
saved with ``datasets``, a Hugging Face dataset id must be in this host's caches (looked for by
their files, :mod:`trainer.hub_data`), and their rows are read by the check against the tokenizer
(:mod:`sweep.checks.token_check`, a subprocess that may import ``datasets`` and runs the same check). The
folders: the runs folder and an SQLite database's folder must be writable. Nothing here writes
anything; :func:`sweep.run.runner.run_study` runs these, then :func:`sweep.study.storage.check_database_file`,
then the tokenizer check, before it opens the study.
"""

from __future__ import annotations

from pathlib import Path

from sweep.checks.writable import unwritable_reason
from sweep.errors import UserError
from sweep.schema.study_file import Study
from sweep.study.storage import sqlite_path
from trainer.data_check import check_data as check_rows
from trainer.rows import RowError


def check_data(study: Study) -> None:
    """Raise a UserError for the first problem with ``study``'s data (folders: their files only)."""
    try:
        rows = check_rows(study.config.data)
    except RowError as e:
        raise UserError(f"{study.path}: {e.key}: {e}") from None
    if rows is not None and rows.format == "text" and "chrf" in study.config.search.objective:
        raise UserError(f"{study.path}: search.objective: chrf scores answers to the eval rows' prompts, and text "
                        "rows have neither; give chat, sharegpt or alpaca rows, or another objective")


def check_writable(folder: Path, storage_url: str, runs_dir: Path, storage_given: bool) -> None:
    """The study's runs folder (and an SQLite database's folder) can be made and written."""
    problem = unwritable_reason(folder)
    if problem:
        raise UserError(f"--runs-dir {runs_dir}: {problem}; give a folder the study's runs can be written to")
    database = sqlite_path(storage_url)
    problem = unwritable_reason(database.parent) if database is not None and storage_given else None
    if problem:
        raise UserError(f"--storage {storage_url}: {problem}; give a database file in a writable folder")
