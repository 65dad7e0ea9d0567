"""Several workers on one study, as separate processes sharing its storage: PostgreSQL (as for many
hosts) and SQLite (several workers on one host). Every trial is finished once, none is lost, none
duplicated, and a worker killed mid-trial has its trial failed as stale and resumed by another."""

from __future__ import annotations

import uuid

import pytest
from optuna.trial import TrialState

from tests.sweep.live_study import (
    assert_adapters_load,
    assert_no_trainer_left,
    assert_study_finished_exactly,
    checkpoint_saved,
    load_trials,
    sqlite_url,
    start_sweep,
    wait_for,
    write_study,
)


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_three_workers_finish_every_trial_once(tmp_path, backend, request):
    name, n_trials = f"workers-{uuid.uuid4().hex[:8]}", 4
    study, runs = write_study(tmp_path, name, n_trials), tmp_path / "runs"
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else sqlite_url(runs, name)
    storage = ["--storage", url] if backend == "postgresql" else []
    # trial 0 pauses after its checkpoint of step 4, for the test to kill its worker there
    workers = [start_sweep(study, runs, *storage, log=tmp_path / f"worker-{i}.log", SWEEP_TEST_FAULT="hang@5:trial=0")
               for i in range(3)]
    wait_for(lambda: checkpoint_saved(runs / name / "trials" / "00000", 4), 300, "trial 0's checkpoint")
    [first] = [t for t in load_trials(name, url) if t.number == 0]
    owner = next(w for w in workers if first.user_attrs["worker"].endswith(f":{w.pid}"))
    owner.kill()
    owner.wait(timeout=60)
    for worker in workers:
        if worker is not owner:
            assert worker.wait(timeout=600) == 0, (tmp_path / f"worker-{workers.index(worker)}.log").read_text()

    trials = load_trials(name, url)
    complete = assert_study_finished_exactly(trials, n_trials)
    [lost] = [t for t in trials if t.state == TrialState.FAIL]
    assert lost.number == 0 and lost.user_attrs["fail_reason"].startswith("stale: ")
    [retry] = [t for t in complete if t.user_attrs.get("retry_of") == 0]
    assert retry.user_attrs["resumed_from_step"] == 4 and retry.params == lost.params
    assert len({t.user_attrs["worker"] for t in complete}) >= 2, "the surviving workers shared the trials"
    assert_no_trainer_left(runs)
    assert_adapters_load(complete)
