"""What the sweep relies on in Optuna's private API (``sweep.study.optuna_internals``), pinned on a real SQLite
storage opened as ``sweep run`` opens it: with an Optuna upgrade that changes any of it, these fail first."""

from __future__ import annotations

import datetime as dt
import time

import optuna
import pytest
import sqlalchemy as sa
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from sweep.study.optuna_internals import (
    contains,
    enqueued_params,
    grid_id,
    grid_points,
    heartbeat_tables,
    rdb_engine,
    set_system_attr,
    stale_trial_ids,
    storage_of,
    study_id,
    system_attrs,
    trial_id,
)
from sweep.study.storage import open_study

GRACE = 1


@pytest.fixture
def study(tmp_path) -> optuna.Study:
    return open_study(f"sqlite:///{tmp_path / 'study.db'}", "pinned", heartbeat=(1, GRACE))


def test_the_storage_and_id_are_the_ones_the_study_uses(study, tmp_path):
    storage = storage_of(study)
    assert storage.get_study_id_from_name("pinned") == study_id(study)
    storage.set_study_user_attr(study_id(study), "seen", 1)
    assert study.user_attrs == {"seen": 1}
    again = optuna.load_study(study_name="pinned", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert study_id(again) == study_id(study)


def test_system_attributes_round_trip_and_persist(study, tmp_path):
    assert system_attrs(study) == {}
    set_system_attr(study, "sweep:uid", "abc")
    assert system_attrs(study) == {"sweep:uid": "abc"}
    again = optuna.load_study(study_name="pinned", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert system_attrs(again) == {"sweep:uid": "abc"}


def test_a_running_trials_id_reaches_it_in_the_storage(study):
    first, second = study.ask(), study.ask()
    storage = storage_of(study)
    assert [storage.get_trial(trial_id(t)).number for t in (first, second)] == [0, 1]
    storage.set_trial_user_attr(trial_id(second), "fail_reason", "why")
    assert storage.get_trial(trial_id(second)).user_attrs == {"fail_reason": "why"}


def test_the_engine_is_the_sqlite_file_under_the_cache(study, tmp_path):
    engine = rdb_engine(study)
    assert isinstance(engine, sa.engine.Engine)
    assert engine.url.database == str(tmp_path / "study.db")
    study.ask()
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM trials")).scalar() == 1


def test_heartbeat_tables_hold_running_trials_started_in_naive_utc(study):
    trial = study.ask()
    storage_of(study).record_heartbeat(trial_id(trial))
    trials, beats = heartbeat_tables()
    query = (sa.select(trials.c.trial_id, trials.c.state, trials.c.datetime_start, beats.c.trial_id)
             .select_from(trials.outerjoin(beats, trials.c.trial_id == beats.c.trial_id))
             .where(trials.c.study_id == study_id(study), trials.c.state == TrialState.RUNNING.name))
    with rdb_engine(study).connect() as connection:
        [(found, state, started, beat)] = connection.execute(query).all()
    assert (found, state, beat) == (trial_id(trial), TrialState.RUNNING, trial_id(trial))
    assert started.tzinfo is None
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    assert abs((now - started).total_seconds()) < 60


def test_optunas_stale_check_misses_a_trial_that_never_beat(study):
    silent, never_beat = study.ask(), study.ask()
    storage_of(study).record_heartbeat(trial_id(silent))
    time.sleep(GRACE + 1.5)
    alive = study.ask()
    storage_of(study).record_heartbeat(trial_id(alive))
    assert stale_trial_ids(study) == [trial_id(silent)]
    assert trial_id(never_beat) not in stale_trial_ids(study)  # sweep.study.retries finds it with its own query


def test_a_finished_trial_refuses_further_updates(study):
    trial = study.ask()
    storage = storage_of(study)
    assert storage.set_trial_state_values(trial_id(trial), TrialState.FAIL)
    with pytest.raises(UpdateFinishedTrialError):
        storage.set_trial_state_values(trial_id(trial), TrialState.FAIL)
    with pytest.raises(UpdateFinishedTrialError):
        storage.set_trial_user_attr(trial_id(trial), "fail_reason", "late")


def test_an_enqueued_trial_carries_its_parameters_before_and_after_it_ran(study):
    study.enqueue_trial({"learning_rate": 0.01})
    [waiting] = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert enqueued_params(waiting) == {"learning_rate": 0.01}
    trial = study.ask()
    assert trial.suggest_float("learning_rate", 1e-3, 1e-1, log=True) == 0.01
    study.tell(trial, 1.0)
    sampled = study.ask()
    study.tell(sampled, 2.0)
    assert [enqueued_params(t) for t in study.trials] == [{"learning_rate": 0.01}, None]


@pytest.mark.parametrize("distribution, inside, outside", [
    (FloatDistribution(1e-3, 1e-1, log=True), 0.01, 0.5),
    (IntDistribution(1, 3), 2, 4),
    (CategoricalDistribution([4, 8, 16]), 8, 32),
    (CategoricalDistribution([False, True]), True, None),
])
def test_contains_takes_a_value_as_a_trial_holds_it(distribution, inside, outside):
    assert contains(distribution, inside)
    if isinstance(distribution, CategoricalDistribution):
        with pytest.raises(ValueError):  # a choice the distribution never had is no internal value at all
            contains(distribution, outside)
    else:
        assert not contains(distribution, outside)


def test_a_grid_trial_holds_the_index_of_its_point_in_the_samplers_order(study):
    sampler = optuna.samplers.GridSampler({"r": [4, 8, 16], "lr": [1e-3, 1e-2]}, seed=5)
    study.sampler = sampler
    for _ in range(4):
        trial = study.ask()
        trial.suggest_categorical("r", [4, 8, 16])
        trial.suggest_categorical("lr", [1e-3, 1e-2])
        study.tell(trial, 1.0)
    for trial in study.trials:
        assert grid_points(sampler)[grid_id(trial)] == trial.params
    assert len(grid_points(sampler)) == 6
