"""Stale trials and retries on a real SQLite study: a RUNNING trial whose worker stopped beating,
or died before its first heartbeat, is failed with the reason and queued again, a bounded number
of times; a trial whose worker still beats is left alone."""

from __future__ import annotations

import time

from optuna.trial import TrialState

from sweep.study.optuna_internals import enqueued_params, storage_of, trial_id
from sweep.study.retries import fail_stale_trials, requeue
from sweep.study.storage import open_study
from sweep.study.trial_attrs import RETRIES, RETRY_OF

GRACE = 1


def new_study(tmp_path):
    return open_study(f"sqlite:///{tmp_path / 'study.db'}", "retries", heartbeat=(1, GRACE))


def running_trial(optuna_study, heartbeat: bool):
    trial = optuna_study.ask()
    trial.suggest_float("learning_rate", 1e-3, 1e-1, log=True)
    if heartbeat:
        storage_of(optuna_study).record_heartbeat(trial_id(trial))
    return trial


def test_trials_of_dead_workers_are_failed_with_the_reason_and_queued_again(tmp_path):
    optuna_study = new_study(tmp_path)
    silent = running_trial(optuna_study, heartbeat=True)
    never_beat = running_trial(optuna_study, heartbeat=False)  # its worker died right after creating it
    time.sleep(GRACE + 1.5)
    alive = running_trial(optuna_study, heartbeat=True)

    assert sorted(fail_stale_trials(optuna_study, GRACE, max_retries=2)) == \
        [(silent.number, True), (never_beat.number, True)]
    trials = optuna_study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    for number in (silent.number, never_beat.number):
        assert by_number[number].state == TrialState.FAIL
        assert by_number[number].user_attrs["fail_reason"].startswith("stale: no heartbeat")
    assert by_number[alive.number].state == TrialState.RUNNING
    queued = [t for t in trials if t.state == TrialState.WAITING]
    assert sorted(t.user_attrs[RETRY_OF] for t in queued) == [silent.number, never_beat.number]
    assert {enqueued_params(t)["learning_rate"] for t in queued} == \
        {by_number[silent.number].params["learning_rate"], by_number[never_beat.number].params["learning_rate"]}
    assert fail_stale_trials(optuna_study, GRACE, max_retries=2) == [], "failed once, queued once"


def test_a_trial_is_retried_at_most_max_retries_times(tmp_path):
    optuna_study = new_study(tmp_path)
    trial = running_trial(optuna_study, heartbeat=True)
    optuna_study.tell(trial, state=TrialState.FAIL)
    for retries in (1, 2):
        assert requeue(optuna_study, optuna_study.get_trials(deepcopy=False)[-1], max_retries=2)
        retry = optuna_study.ask()
        assert retry.user_attrs == {RETRY_OF: trial.number, RETRIES: retries}
        optuna_study.tell(retry, state=TrialState.FAIL)
    assert not requeue(optuna_study, optuna_study.get_trials(deepcopy=False)[-1], max_retries=2)
