"""Checks made before a study is touched: its data passes :func:`trainer.data_check.check_data`, the
same check the trainer makes (files exist, rows in one known format, a non-empty eval set). A failure
is a :class:`UserError` naming the study file and key. Folders saved with ``datasets`` are checked by
the trainer (reading them needs ``datasets``).
"""

from __future__ import annotations

from sweep.errors import UserError
from sweep.study_file import Study
from trainer.data_check import check_data as check_rows
from trainer.rows import RowError


def check_data(study: Study) -> None:
    """Raise a UserError for the first problem with ``study``'s data."""
    try:
        check_rows(study.config.data)
    except RowError as e:
        raise UserError(f"{study.path}: {e}") from None
