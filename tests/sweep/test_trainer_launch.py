"""Both launchers through the real objective: a trial in a fresh trainer process and one in a warm
worker are the same trial, recorded the same way."""

from __future__ import annotations

from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.sweep.live_study import run_sweep, study_trials, write_study
from trainer.trial_folder import LOG_FILE


@pytest.fixture(scope="module")
def both_launchers(tmp_path_factory) -> dict[bool, tuple]:
    """The same one-trial study run with warm workers on and off: (its trial, its runs folder) by ``warm_workers``."""
    runs_of = {}
    for warm in (True, False):
        folder = tmp_path_factory.mktemp(f"warm-{warm}")
        study, runs = write_study(folder, "launch", 1, max_steps=4, eval_points=2,
                                  execution={"warm_workers": warm}), folder / "runs"
        done = run_sweep(study, runs)
        assert done.returncode == 0, done.stdout + done.stderr
        [trial] = study_trials(runs, "launch")
        runs_of[warm] = trial, runs
    return runs_of


def test_a_cold_trainer_and_a_warm_worker_record_the_same_trial(both_launchers):
    (warm, _), (cold, _) = both_launchers[True], both_launchers[False]
    assert warm.state == cold.state == TrialState.COMPLETE
    assert warm.params == cold.params
    assert warm.value == pytest.approx(cold.value, rel=1e-6)
    assert [s for s, _ in warm.user_attrs["eval_losses"]] == [s for s, _ in cold.user_attrs["eval_losses"]] == [2, 4]
    for trial in (warm, cold):
        assert trial.user_attrs["exit_status"] == 0
        assert trial.user_attrs["log_path"] == str(Path(trial.user_attrs["trial_dir"]) / LOG_FILE)


def test_only_the_warm_launcher_starts_workers(both_launchers):
    (_, warm_runs), (_, cold_runs) = both_launchers[True], both_launchers[False]
    assert list((warm_runs / "launch" / "workers").glob("worker-*"))
    assert not (cold_runs / "launch" / "workers").exists()
