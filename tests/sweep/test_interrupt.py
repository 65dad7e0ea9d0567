"""Ctrl-C and SIGTERM to a real orchestrator: its trainers end too (no orphan), the running trials
are recorded as interrupted and queued again, the process exits within a few seconds, and the next
run resumes them from their checkpoints. A second Ctrl-C exits at once."""

from __future__ import annotations

import signal
import time

import pytest
from optuna.trial import TrialState

from tests.sweep.live_study import (
    assert_no_trainer_left,
    assert_study_finished_exactly,
    checkpoint_saved,
    run_sweep,
    start_sweep,
    study_trials,
    trainer_pids,
    wait_for,
    write_study,
)


def start_two_paused_trials(study, runs, faults: str):
    """Start the study with two trials at once and wait until both pause after a checkpoint."""
    sweep = start_sweep(study, runs, "--trials-per-gpu", "2", SWEEP_TEST_FAULT=faults)
    trials = runs / study.stem / "trials"
    wait_for(lambda: checkpoint_saved(trials / "00000", 4) and checkpoint_saved(trials / "00001", 2), 240,
             "both trials to pause after a checkpoint")
    assert len(trainer_pids(runs)) == 2
    return sweep


def test_ctrl_c_ends_the_trainers_and_the_next_run_resumes_their_checkpoints(tmp_path):
    study, runs = write_study(tmp_path, "ctrl-c", 2), tmp_path / "runs"
    sweep = start_two_paused_trials(study, runs, "hang@5:trial=0,hang@3:trial=1")
    sent = time.monotonic()
    sweep.send_signal(signal.SIGINT)
    assert sweep.wait(timeout=30) == 130
    assert time.monotonic() - sent < 10
    assert_no_trainer_left(runs)

    trials = study_trials(runs, "ctrl-c")
    assert [(t.state, t.user_attrs.get("fail_reason")) for t in trials[:2]] == [(TrialState.FAIL, "interrupted")] * 2
    assert sorted(t.user_attrs["retry_of"] for t in trials if t.state == TrialState.WAITING) == [0, 1]

    done = run_sweep(study, runs, "--trials-per-gpu", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    complete = assert_study_finished_exactly(study_trials(runs, "ctrl-c"), 2)
    resumed = {t.user_attrs["retry_of"]: t.user_attrs["resumed_from_step"] for t in complete}
    assert resumed == {0: 4, 1: 2}


@pytest.mark.parametrize("signals", [[signal.SIGTERM], [signal.SIGINT, signal.SIGINT]], ids=["sigterm", "ctrl-c-twice"])
def test_stop_signals_leave_no_trainer_behind(tmp_path, signals):
    study, runs = write_study(tmp_path, "stop", 2), tmp_path / "runs"
    sweep = start_two_paused_trials(study, runs, "hang@5:trial=0,hang@3:trial=1")
    sent = time.monotonic()
    for sig in signals:
        sweep.send_signal(sig)
        time.sleep(0.2)
    assert sweep.wait(timeout=30) == 130
    assert time.monotonic() - sent < (3 if len(signals) == 2 else 10)
    assert_no_trainer_left(runs, within=5)
    trials = study_trials(runs, "stop")
    assert TrialState.COMPLETE not in {t.state for t in trials}
    if len(signals) == 1:
        assert {t.user_attrs.get("fail_reason") for t in trials if t.state == TrialState.FAIL} == {"interrupted"}
