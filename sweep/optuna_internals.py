"""Every use of Optuna's private API, in one place, so an Optuna upgrade breaks here and nowhere else.

Optuna 5's ``Study`` exposes neither its storage nor its system attributes, and its stale-trial check
cannot be told a reason; the sweep needs all three. ``tests/sweep/test_optuna_internals.py`` pins
each behaviour relied on here.
"""

from __future__ import annotations

import optuna


def storage_of(study: optuna.Study):
    """The storage object a study reads and writes through (Optuna's cache around the RDB storage)."""
    return study._storage


def study_id(study: optuna.Study) -> int:
    return study._study_id


def system_attrs(study: optuna.Study) -> dict:
    """The study's system attributes (``Study.system_attrs`` was removed in Optuna 5)."""
    return storage_of(study).get_study_system_attrs(study_id(study))


def set_system_attr(study: optuna.Study, key: str, value) -> None:
    storage_of(study).set_study_system_attr(study_id(study), key, value)


def trial_id(trial: optuna.Trial) -> int:
    """The storage's id of a running trial (not its number)."""
    return trial._trial_id


def rdb_engine(study: optuna.Study):
    """The SQLAlchemy engine under the study's RDB storage (beneath Optuna's cache layer)."""
    storage = storage_of(study)
    return getattr(storage, "_backend", storage).engine
