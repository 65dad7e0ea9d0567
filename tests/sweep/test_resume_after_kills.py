"""Killing the orchestrator for real (SIGKILL, no chance to clean up) and resuming the study.

The trials it left RUNNING are found by their stale heartbeat, failed with the reason, and retried
from their last checkpoint; the resumed trial records exactly what an uninterrupted run records,
and the study ends with exactly ``n_trials`` complete trials whose adapters load.
"""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

from optuna.trial import TrialState

from tests.sweep.live_study import (
    assert_adapters_load,
    assert_no_trainer_left,
    assert_study_finished_exactly,
    checkpoint_saved,
    kill,
    run_sweep,
    run_trainer,
    start_sweep,
    study_trials,
    wait_for,
    write_study,
)
from trainer.trial_folder import SPEC_FILE

EVAL_STEPS = [2, 4, 6, 8]  # max_steps 8 at 4 eval points; each eval point is also a checkpoint


def kill_after_checkpoint(study, runs, trial_folder: str, step: int) -> None:
    """Start the study with trial 0 pausing just after its checkpoint of ``step``, then SIGKILL the
    orchestrator there: the trial has history before the kill and steps to redo after it."""
    sweep = start_sweep(study, runs, SWEEP_TEST_FAULT=f"hang@{step + 1}:trial=0")
    trial_dir = runs / study.stem / "trials" / trial_folder
    wait_for(lambda: checkpoint_saved(trial_dir, step), 240, f"the checkpoint of step {step}")
    kill(sweep)
    assert_no_trainer_left(runs, within=15)  # the orphaned trainer ends itself


def test_resumed_trial_records_what_an_uninterrupted_run_records(tmp_path):
    runs = tmp_path / "runs"
    reference = write_study(tmp_path, "uninterrupted", 1)
    assert run_sweep(reference, runs).returncode == 0
    [expected] = study_trials(runs, "uninterrupted")

    study = write_study(tmp_path, "killed", 1)
    kill_after_checkpoint(study, runs, "00000", 4)
    done = run_sweep(study, runs)
    assert done.returncode == 0, done.stdout + done.stderr

    trials = study_trials(runs, "killed")
    [resumed] = assert_study_finished_exactly(trials, 1)
    [lost] = [t for t in trials if t.state == TrialState.FAIL]
    assert lost.number == 0 and lost.user_attrs["fail_reason"].startswith("stale: no heartbeat")
    assert resumed.user_attrs["retry_of"] == 0 and resumed.user_attrs["resumed_from_step"] == 4
    assert resumed.user_attrs["trial_dir"] == lost.user_attrs["trial_dir"]
    # the same floats, not close ones: resuming on the CPU is deterministic
    assert resumed.user_attrs["eval_losses"] == expected.user_attrs["eval_losses"]
    assert [step for step, _ in resumed.user_attrs["eval_losses"]] == EVAL_STEPS
    assert resumed.value == expected.value
    assert resumed.user_attrs["train_loss"] == expected.user_attrs["train_loss"]
    assert_adapters_load([resumed])


def test_orchestrator_killed_at_random_moments_resumes_to_the_exact_total(tmp_path):
    runs, n_trials = tmp_path / "runs", 3
    study = write_study(tmp_path, "rounds", n_trials)
    kill_after_checkpoint(study, runs, "00000", 4)  # one kill sure to leave a checkpoint behind
    rng, moments = random.Random(46), []
    for _ in range(3):  # two trials at a time, so the kills land in several trials
        moments.append(round(rng.uniform(2, 15), 1))
        sweep = start_sweep(study, runs, "--trials-per-gpu", "2")
        try:
            sweep.wait(timeout=moments[-1])
        except subprocess.TimeoutExpired:
            kill(sweep)
    done = run_sweep(study, runs)
    assert done.returncode == 0, f"killed after {moments} s\n{done.stdout}{done.stderr}"

    trials = study_trials(runs, "rounds")
    complete = assert_study_finished_exactly(trials, n_trials)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert failed and all(t.user_attrs["fail_reason"].startswith("stale: ") for t in failed), moments
    first = next(t for t in complete if t.user_attrs["trial_dir"].endswith("00000"))
    assert first.user_attrs["retry_of"] == 0 and first.user_attrs["resumed_from_step"] >= 4
    for trial in complete:
        assert [step for step, _ in trial.user_attrs["eval_losses"]] == EVAL_STEPS, trial.number
    assert_no_trainer_left(runs)
    assert_adapters_load(complete)
    for trial in complete:  # a trial resumed after kills equals the same spec trained once from scratch
        assert retrained_eval_loss(trial, runs.parent / f"again-{trial.number}") == trial.value, trial.number


def retrained_eval_loss(trial, folder) -> float:
    """Train ``trial``'s spec again, from scratch, in a fresh folder; returns its final eval loss."""
    spec = json.loads((Path(trial.user_attrs["trial_dir"]) / SPEC_FILE).read_text())
    folder.mkdir()
    (folder / SPEC_FILE).write_text(json.dumps({**spec, "output_dir": str(folder)}))
    return run_trainer(folder / SPEC_FILE)[-1]["eval_loss"]
