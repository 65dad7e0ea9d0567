"""Checks made before a study is touched: the data files exist, their rows are in one known
format, and the eval set is not empty. A failure is a :class:`UserError` naming the study file and key.
Folders saved with ``datasets`` are checked by the trainer (reading them needs ``datasets``).
"""

from __future__ import annotations

from pathlib import Path

from sweep.errors import UserError
from sweep.study_file import Study
from trainer.rows import RowError, check_format, read_jsonl, split_rows


def check_data(study: Study) -> None:
    data = study.config.data
    try:
        fmt = _check_file(study, "train", data.format)
        if data.eval is not None:
            _check_file(study, "eval", fmt)
        elif fmt is not None:
            train = read_jsonl(Path(data.train))
            _, evaluation = split_rows(train, data.eval_fraction, data.split_seed)
            if not evaluation:
                raise UserError(f"{study.path}: data.eval_fraction: {data.eval_fraction} of {len(train)} rows "
                                "leaves an empty eval set; use a larger fraction or a separate eval file")
    except RowError as e:
        raise UserError(f"{study.path}: data: {e}") from None
    if fmt == "text" and data.train_on_responses_only:
        raise UserError(f"{study.path}: data.train_on_responses_only: true needs chat or alpaca rows, the rows are text")


def _check_file(study: Study, key: str, declared: str) -> str | None:
    path = Path(getattr(study.config.data, key))
    if path.is_dir():
        return None
    return check_format(read_jsonl(path), f"data.{key} {path}", declared)
