"""A configuration that already ran takes that trial's outcome in the real objective, with no trainer run."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from rich.console import Console

from sweep.launch.gpu_slots import SlotPool
from sweep.run.objective import Objective
from sweep.run.progress import ProgressView
from sweep.schema.study_file import load_study
from sweep.study.study_versions import Identity
from tests.sweep.live_study import MINIMAL_STUDY, write_study_text

SPACE = {"learning_rate": FloatDistribution(1e-4, 1e-2, log=True), "r": CategoricalDistribution([4, 8])}


def run_one_trial(study, optuna_study, runs: Path) -> io.StringIO:
    """One trial through the real objective (one CPU slot); returns what its progress view printed."""
    out = io.StringIO()
    with ProgressView("s", 2, {}, None, console=Console(file=out)) as progress:
        stopping = threading.Event()
        objective = Objective(study, runs, progress, SlotPool({None: 1}, stopping), stopping, Identity("test", 1))
        optuna_study.optimize(objective, n_trials=1)
    return out


def test_the_objective_does_not_train_a_completed_configuration_again(tmp_path):
    study = load_study(str(write_study_text(tmp_path, MINIMAL_STUDY)))
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    optuna_study = optuna.create_study()
    optuna_study.add_trial(optuna.trial.create_trial(params={"learning_rate": 1e-3, "r": 8}, distributions=SPACE,
                                                     value=2.5))
    optuna_study.enqueue_trial({"learning_rate": 1e-3, "r": 8})
    out = run_one_trial(study, optuna_study, tmp_path / "runs")
    repeat = optuna_study.trials[1]
    assert repeat.state == optuna.trial.TrialState.COMPLETE and repeat.value == 2.5
    assert repeat.user_attrs["repeat_of"] == 0
    assert not (tmp_path / "runs" / "trials").exists()  # no trial folder: no trainer was started
    assert "trial 1 COMPLETE eval_loss=2.5000 (same as trial 0, not trained again)" in out.getvalue()


def test_a_pruned_configuration_proposed_again_is_pruned_again_with_its_curve(tmp_path):
    study = load_study(str(write_study_text(tmp_path, MINIMAL_STUDY)))
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    optuna_study = optuna.create_study()
    optuna_study.add_trial(optuna.trial.create_trial(
        params={"learning_rate": 1e-4, "r": 4}, distributions=SPACE, state=optuna.trial.TrialState.PRUNED,
        intermediate_values={1: 7.3, 2: 7.2}, user_attrs={"eval_losses": [[5, 7.3], [10, 7.2]]}))
    optuna_study.enqueue_trial({"learning_rate": 1e-4, "r": 4})
    out = run_one_trial(study, optuna_study, tmp_path / "runs")
    repeat = optuna_study.trials[1]
    assert repeat.state == optuna.trial.TrialState.PRUNED and repeat.user_attrs["repeat_of"] == 0
    assert repeat.intermediate_values == {1: 7.3, 2: 7.2}
    assert repeat.user_attrs["eval_losses"] == [[5, 7.3], [10, 7.2]]
    assert not (tmp_path / "runs" / "trials").exists()
    assert "trial 1 PRUNED (same as trial 0, not trained again)" in out.getvalue()
