"""Trials that stopped through no fault of their own are failed with a reason and tried again.

Two kinds: trials interrupted by Ctrl-C or SIGTERM (``fail_reason: interrupted``), and trials left
RUNNING by a worker that died (killed, host lost): their heartbeat stops, and once it is older
than the grace period any worker of the study fails them (``fail_reason: stale: ...``).

Either way the trial's parameters are queued again as a new trial, at most ``max_retries`` times
per original trial. The new trial carries ``retry_of`` (the original trial's number), so it runs
in the original's folder and resumes from its newest checkpoint.

Optuna's own stale-trial check (``fail_stale_trials``) cannot record a reason (a failed trial's
attributes are frozen) and misses a trial whose worker died between creating it and its first
heartbeat; this module reads the heartbeat table itself for both.
"""

from __future__ import annotations

import datetime as dt

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from sweep.study.optuna_internals import (
    enqueued_params,
    heartbeat_tables,
    rdb_engine,
    stale_trial_ids,
    storage_of,
    study_id,
)
from sweep.study.trial_attrs import FAIL_REASON, RETRIES, RETRY_OF


def requeue(optuna_study: optuna.Study, trial: FrozenTrial, max_retries: int) -> bool:
    """Queue ``trial``'s parameters again, unless they were retried ``max_retries`` times already."""
    params = trial.params or enqueued_params(trial)
    retries = trial.user_attrs.get(RETRIES, 0)
    if not params or retries >= max_retries:
        return False  # no parameters yet: nothing ran, a fresh trial takes its place
    original = trial.user_attrs.get(RETRY_OF, trial.number)
    optuna_study.enqueue_trial(params, user_attrs={RETRY_OF: original, RETRIES: retries + 1})
    return True


def fail_stale_trials(optuna_study: optuna.Study, grace_seconds: int, max_retries: int) -> list[tuple[int, bool]]:
    """Fail the RUNNING trials whose worker stopped beating; returns (number, queued again) of each.

    Safe to call from many workers at once: only the worker whose update fails a trial requeues it.
    """
    storage = storage_of(optuna_study)
    failed = []
    for trial_id in _stale_trial_ids(optuna_study, grace_seconds):
        trial = storage.get_trial(trial_id)
        reason = f"stale: no heartbeat for over {grace_seconds} s (its worker was killed or lost)"
        try:
            storage.set_trial_user_attr(trial_id, FAIL_REASON, reason)
            if not storage.set_trial_state_values(trial_id, TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:
            continue  # another worker failed it first, or its own worker just finished it
        failed.append((trial.number, requeue(optuna_study, trial, max_retries)))
    return failed


def _stale_trial_ids(optuna_study: optuna.Study, grace_seconds: int) -> list[int]:
    """RUNNING trials with a heartbeat older than the grace period, or none since longer than it."""
    import sqlalchemy as sa

    stale = set(stale_trial_ids(optuna_study))
    trials, beats = heartbeat_tables()
    query = (sa.select(trials.c.trial_id, trials.c.datetime_start)
             .select_from(trials.outerjoin(beats, trials.c.trial_id == beats.c.trial_id))
             .where(trials.c.study_id == study_id(optuna_study), trials.c.state == TrialState.RUNNING.name,
                    beats.c.trial_id.is_(None)))
    cutoff = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(seconds=grace_seconds)
    with rdb_engine(optuna_study).connect() as connection:
        for trial_id, started in connection.execute(query):
            if started is not None and started < cutoff:  # stored as naive UTC
                stale.add(trial_id)
    return sorted(stale)
