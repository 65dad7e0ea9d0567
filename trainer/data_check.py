"""The one check of a study's data, made by the orchestrator before anything starts, by its check of
the rows against the tokenizer (:mod:`trainer.row_lengths`) and by the trainer before it trains: the
files exist and are UTF-8 JSONL (or one dataset saved with ``datasets``), a Hugging Face dataset id
is in this host's cache (:mod:`trainer.hub_data`) with the subset and splits named, the rows share
one known format, the ``eval_fraction`` split leaves neither set empty, and response-only loss has
responses to learn from.

A problem is a :class:`~trainer.rows.RowError` whose ``key`` is the study file's key (``data.train``,
``data.eval``, ``data.subset``, ``data.train_split``, ``data.eval_split``, ``data.eval_fraction`` or
``data.train_on_responses_only``) and whose message names the file and the line:
``sweep.checks.preflight`` says ``STUDY: KEY: MESSAGE``, the trainer records ``KEY: MESSAGE`` as its
trial's ``bad_input`` reason. Plain Python, so the orchestrator calls it without the training stack.
Rows that only ``datasets`` reads (folders saved with it, hub datasets) are read only where a
:class:`Reader` is given (the trainer's, :data:`trainer.trial_data.READER`); without one such a
source is checked by its files and the rest of the check is left to where it can be read::

    rows = check_data(spec.data, reader=READER)
    rows.train, rows.eval, rows.format      # the rows to train and evaluate on, split as the spec says
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from trainer import hub_data
from trainer.hub_data import CachedDataset
from trainer.rows import RowError, check_format, check_saved_dataset, read_numbered_jsonl, split_rows
from trainer.spec import DataSpec


class Reader(Protocol):
    """Reads the rows that need ``datasets``: a folder saved with ``save_to_disk``, a split of a cached hub dataset."""

    def folder(self, path: str) -> list[dict]: ...

    def hub(self, cached: CachedDataset, subset: str | None, split: str, split_key: str) -> list[dict]: ...


@dataclass(frozen=True)
class DataRows:
    """A study's checked rows: train and eval (split off the train file with ``eval_fraction``) and their format."""

    train: list[dict]
    eval: list[dict]
    format: str


@dataclass(frozen=True)
class Source:
    """Where one set's rows come from: the study file's key and value, and the split asked of a dataset id."""

    key: str
    value: str
    split_key: str
    split: str | None

    @property
    def hub(self) -> bool:
        return hub_data.is_hub_id(self.value)


def sources(data: DataSpec) -> list[Source]:
    """The train source, then the eval source where there is one (``eval``, or train's dataset with ``eval_split``)."""
    found = [Source("data.train", data.train, "data.train_split", data.train_split)]
    if data.eval_source is not None:  # named by the key that holds its value: data.train for train's dataset
        key = "data.eval" if data.eval is not None else "data.train"
        found.append(Source(key, data.eval_source, "data.eval_split", data.eval_split))
    return found


def check_data(data: DataSpec, reader: Reader | None = None) -> DataRows | None:
    """Check the data of ``data`` and return its rows; raises :class:`RowError` for the first problem.

    Returns None when a source is one that only ``datasets`` reads and no ``reader`` was given: those
    rows are left to where ``datasets`` can read them, while their files are checked.
    """
    train_source, *eval_source = sources(data)
    if data.subset is not None and not any(source.hub for source in (train_source, *eval_source)):
        raise RowError(f"{data.subset!r} picks a subset of a Hugging Face dataset id, and data.train and data.eval "
                       "are local files or folders; remove it", key="data.subset")
    train = _read_checked(train_source, data, data.format, reader)
    fmt = train[1] if train is not None else None
    _responses_need_turns(data, fmt)
    if eval_source:
        evaluation = _read_checked(eval_source[0], data, fmt or data.format, reader)
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


def _read_checked(source: Source, data: DataSpec, declared: str,
                  reader: Reader | None) -> tuple[list[dict], str] | None:
    """The rows of a source and their format (None: rows only ``datasets`` reads, and no reader here)."""
    try:
        if source.hub:
            cached = hub_data.find_cached(source.value, data.subset, source.key)
            if reader is None:
                return None
            split = source.split or hub_data.DEFAULT_SPLIT
            rows = reader.hub(cached, data.subset, split, source.split_key)
            return rows, check_format(rows, f"{source.value} ({split} split)", declared)
        path = Path(source.value)
        if source.split is not None:
            raise RowError(f"{source.split!r} picks a split of a Hugging Face dataset id, and {source.key} is the "
                           f"local {'folder' if path.is_dir() else 'file'} {path}; remove it", key=source.split_key)
        if not path.exists():
            raise RowError(f"{path} does not exist")
        if path.is_dir():
            check_saved_dataset(path)
            if reader is None:
                return None
            rows, lines = reader.folder(source.value), None
        else:
            rows, lines = read_numbered_jsonl(path)
        return rows, check_format(rows, source.value, declared, lines)
    except RowError as e:  # a problem of the source itself is its key's; subset and split problems keep theirs
        raise RowError(str(e), key=source.key if e.key == "data" else e.key) from None
