"""The one check of a study's data, made by the orchestrator before anything starts and by the trainer
before it trains: the files exist, their rows share one known format, the eval set is not empty, and
response-only loss has responses to learn from.

A problem is a :class:`~trainer.rows.RowError` whose message starts with the study file's key
(``data.train /path/train.jsonl: row 3 is ...``): ``sweep.preflight`` puts the study file in front of
it, the trainer records it as its trial's ``bad_input`` reason. Plain Python, so the orchestrator
calls it without the training stack. Folders saved with ``datasets`` are checked only where a
``read_folder`` is given (the trainer's, :mod:`trainer.trial_data`)::

    rows = check_data(spec.data, read_folder=lambda path: load_from_disk(path).to_list())
    rows.train, rows.eval, rows.format      # the rows to train and evaluate on, split as the spec says
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from trainer.rows import RowError, check_format, read_jsonl, split_rows
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
    the trainer, while the files beside them are still checked.
    """
    train = _read(data.train, "data.train", read_folder)
    fmt = check_format(train, f"data.train {data.train}", data.format) if train is not None else None
    evaluation = None
    if data.eval is not None:
        evaluation = _read(data.eval, "data.eval", read_folder)
        if evaluation is not None:
            fmt = check_format(evaluation, f"data.eval {data.eval}", fmt or data.format)
    elif train is not None:
        total = len(train)
        train, evaluation = split_rows(train, data.eval_fraction, data.split_seed)
        if not evaluation:
            raise RowError(f"data.eval_fraction: {data.eval_fraction} of {total} rows leaves an empty eval set; "
                           "use a larger fraction or a separate eval file")
    if fmt == "text" and data.train_on_responses_only:
        raise RowError("data.train_on_responses_only: true needs chat or alpaca rows, the rows are text")
    if train is None or evaluation is None:
        return None
    return DataRows(train=train, eval=evaluation, format=fmt)


def _read(path: str, key: str, read_folder: Callable[[str], list[dict]] | None) -> list[dict] | None:
    """The rows of a JSONL file or a saved folder (None: a folder, and no way to read it here)."""
    if Path(path).is_dir():
        return read_folder(path) if read_folder is not None else None
    if not Path(path).is_file():
        raise RowError(f"{key}: {path} does not exist")
    return read_jsonl(Path(path))
