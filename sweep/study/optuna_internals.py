"""Every use of Optuna's private API, in one place, so an Optuna upgrade breaks here and nowhere else.

Optuna 5's ``Study`` exposes neither its storage nor its system attributes, a running ``Trial`` hides
its storage id, its stale-trial check cannot be told a reason and misses a trial that never beat,
and a distribution's membership test is private; the sweep needs all of them.
``tests/sweep/test_optuna_internals.py`` pins each behaviour relied on here, on a real SQLite storage.

    >>> storage_of(study).record_heartbeat(trial_id(trial))   # doctest: +SKIP
"""

from __future__ import annotations

import optuna


def storage_of(study: optuna.Study):
    """The storage object a study reads and writes through (Optuna's cache around the RDB storage).

    Only the public methods of ``optuna.storages.BaseStorage`` (and ``record_heartbeat``) are called on it.
    """
    return study._storage


def study_id(study: optuna.Study) -> int:
    """The storage's id of a study."""
    return study._study_id


def system_attrs(study: optuna.Study) -> dict:
    """The study's system attributes (``Study.system_attrs`` was removed in Optuna 5)."""
    return storage_of(study).get_study_system_attrs(study_id(study))


def set_system_attr(study: optuna.Study, key: str, value) -> None:
    """Set one of the study's system attributes (no public setter in Optuna 5)."""
    storage_of(study).set_study_system_attr(study_id(study), key, value)


def trial_id(trial: optuna.Trial) -> int:
    """The storage's id of a running trial (not its number)."""
    return trial._trial_id


def rdb_engine(study: optuna.Study):
    """The SQLAlchemy engine under the study's RDB storage (beneath Optuna's cache layer)."""
    storage = storage_of(study)
    return getattr(storage, "_backend", storage).engine


def stale_trial_ids(study: optuna.Study) -> list[int]:
    """Optuna's own check: RUNNING trials whose last heartbeat is older than the storage's grace period.

    A trial that never recorded a heartbeat is not among them.
    """
    return storage_of(study)._get_stale_trial_ids(study_id(study))


def heartbeat_tables():
    """``(trials, heartbeats)``: the SQLAlchemy tables of the RDB storage's trials and their heartbeats.

    Used columns: ``trials.c.trial_id``, ``.study_id``, ``.state`` (compared with a state's name) and
    ``.datetime_start`` (naive UTC); ``heartbeats.c.trial_id``.
    """
    from optuna.storages._rdb import models

    return models.TrialModel.__table__, models.TrialHeartbeatModel.__table__


def enqueued_params(trial: optuna.trial.FrozenTrial) -> dict | None:
    """The parameters a trial was enqueued with (``Study.enqueue_trial``), None if it was not enqueued."""
    return trial.system_attrs.get("fixed_params")


def contains(distribution: optuna.distributions.BaseDistribution, value) -> bool:
    """Whether ``value`` (as a trial holds it, not Optuna's internal form) lies in ``distribution``."""
    return distribution._contains(distribution.to_internal_repr(value))


def grid_points(sampler: optuna.samplers.GridSampler) -> list[dict]:
    """The grid sampler's points in its shuffled order: ``grid_points(s)[i]`` is what a trial with ``grid_id`` i runs."""
    return [dict(zip(sampler._param_names, values, strict=True)) for values in sampler._all_grids]


def grid_id(trial: optuna.trial.FrozenTrial) -> int | None:
    """The index of the grid point the grid sampler gave ``trial`` (None: not sampled by a grid sampler)."""
    return trial.system_attrs.get("grid_id")


def set_metric_names(study: optuna.Study, names: list[str]) -> None:
    """``Study.set_metric_names`` (optuna-dashboard's axis titles), without its note that it is experimental."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(names)
