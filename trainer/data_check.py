"""The one check of a study's data, made by the orchestrator before anything starts, by its check of
the rows against the tokenizer (:mod:`trainer.row_lengths`) and by the trainer before it trains: the
files exist and are UTF-8 JSONL (or one dataset saved with ``datasets``), their rows share one known
format, the ``eval_fraction`` split leaves neither set empty, and response-only loss has responses
to learn from.

A problem is a :class:`~trainer.rows.RowError` whose ``key`` is the study file's key (``data.train``,
``data.eval``, ``data.eval_fraction`` or ``data.train_on_responses_only``) and whose message names
the file and the line: ``sweep.checks.preflight`` says ``STUDY: KEY: MESSAGE``, the trainer records
``KEY: MESSAGE`` as its trial's ``bad_input`` reason. Plain Python, so the orchestrator calls it
without the training stack. The rows of folders saved with ``datasets`` are read only where a
``read_folder`` is given (the trainer's, :func:`trainer.trial_data.read_folder`); without one a
folder is checked by its files and the rest of the check is left to where it can be read::

    rows = check_data(spec.data, read_folder=read_folder)
    rows.train, rows.eval, rows.format      # the rows to train and evaluate on, split as the spec says
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from trainer.rows import RowError, check_format, check_saved_dataset, read_numbered_jsonl, split_rows
from trainer.spec import DataSpec


@dataclass(frozen=True)
class DataRows:
    """A study's checked rows: train and eval (split off the train file with ``eval_fraction``) and their format."""

    train: list[dict]
    eval: list[dict]
    format: str


def check_data(data: DataSpec, read_folder: Callable[[str], list[dict]] | None = None) -> DataRows | None:
    """Check the data of ``data`` and return its rows; raises :class:`RowError` for the first problem.

    Returns None when a source is a folder and no ``read_folder`` was given: those rows are left to
    where ``datasets`` can read them, while the folder's files and the files beside it are checked.
    """
    train = _read_checked(data.train, "data.train", data.format, read_folder)
    fmt = train[1] if train is not None else None
    _responses_need_turns(data, fmt)
    if data.eval is not None:
        evaluation = _read_checked(data.eval, "data.eval", fmt or data.format, read_folder)
        if train is None or evaluation is None:
            if evaluation is not None:
                _responses_need_turns(data, evaluation[1])
            return None
        return DataRows(train=train[0], eval=evaluation[0], format=fmt)
    if train is None:
        return None
    kept, evaluation = split_rows(train[0], data.eval_fraction, data.split_seed)
    for rows, which in ((evaluation, "eval"), (kept, "train")):
        if not rows:
            raise RowError(f"{data.eval_fraction} of {len(train[0])} rows leaves an empty {which} set; give a "
                           f"{'larger' if which == 'eval' else 'smaller'} fraction or a separate eval file",
                           key="data.eval_fraction")
    return DataRows(train=kept, eval=evaluation, format=fmt)


def _responses_need_turns(data: DataSpec, fmt: str | None) -> None:
    if fmt == "text" and data.train_on_responses_only:
        raise RowError("true needs chat or alpaca rows, the rows are text", key="data.train_on_responses_only")


def _read_checked(path: str, key: str, declared: str,
                  read_folder: Callable[[str], list[dict]] | None) -> tuple[list[dict], str] | None:
    """The rows of a JSONL file or a saved folder and their format (None: a folder, and no way to read it here)."""
    try:
        source = Path(path)
        if not source.exists():
            raise RowError(f"{source} does not exist")
        if source.is_dir():
            check_saved_dataset(source)
            if read_folder is None:
                return None
            rows, lines = read_folder(path), None
        else:
            rows, lines = read_numbered_jsonl(source)
        return rows, check_format(rows, path, declared, lines)
    except RowError as e:
        raise RowError(str(e), key=key) from None
