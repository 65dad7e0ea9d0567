"""The pruner section: each name builds its Optuna pruner, and arguments that cannot act are one-line errors."""

from __future__ import annotations

import optuna
import pytest

from sweep.schema.pruners import PRUNERS, PrunerConfig, build_pruner
from sweep.schema.study_file import load_study
from tests.sweep.live_study import MINIMAL_STUDY, study_errors, write_study_text

OPTUNA_CLASS = {
    "none": optuna.pruners.NopPruner, "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner, "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner, "patient": optuna.pruners.PatientPruner,
}


@pytest.mark.parametrize("name", PRUNERS)
def test_each_pruner_builds_with_its_defaults(name):
    assert type(build_pruner(PrunerConfig(name=name))) is OPTUNA_CLASS[name]


def test_default_is_the_worst_quarter_after_three_trials_from_the_third_point():
    pruner = build_pruner(PrunerConfig())
    assert isinstance(pruner, optuna.pruners.PercentilePruner) and pruner._percentile == 75
    assert (pruner._n_startup_trials, pruner._n_warmup_steps, pruner._interval_steps) == (3, 3, 1)


def test_patient_wraps_another_pruner():
    pruner = build_pruner(PrunerConfig(name="patient", patience=1, wrapped=PrunerConfig(name="median")))
    assert isinstance(pruner._wrapped_pruner, optuna.pruners.MedianPruner) and pruner._patience == 1


def pruner_errors(tmp_path, pruner: str, training: str = "") -> list[str]:
    text = MINIMAL_STUDY + f"  pruner: {pruner}\n" + (f"training: {training}\n" if training else "")
    return study_errors(write_study_text(tmp_path, text))


def test_an_argument_the_pruner_ignores_is_an_error(tmp_path):
    (line,) = pruner_errors(tmp_path, "{name: hyperband, n_warmup_steps: 2}")
    assert "search.pruner" in line and "hyperband pruner does not use n_warmup_steps" in line
    assert "n_warmup_steps is for median, percentile" in line


def test_wrapped_is_only_for_patient(tmp_path):
    (line,) = pruner_errors(tmp_path, "{name: median, wrapped: {name: median}}")
    assert "median pruner does not use wrapped" in line


def test_warmup_that_covers_every_eval_point_is_an_error(tmp_path):
    (line,) = pruner_errors(tmp_path, "{name: median, n_warmup_steps: 4}", "{eval_points: 4}")
    assert line.endswith("search.pruner.n_warmup_steps: 4 leaves no eval point to prune at: "
                         "each trial reports training.eval_points 4")


def test_warmup_is_not_checked_against_eval_steps(tmp_path):
    # with eval_steps a trial reports as many evaluations as its length allows
    text = MINIMAL_STUDY + "  pruner: {name: median, n_warmup_steps: 4}\ntraining: {eval_points: 4, eval_steps: 5}\n"
    assert load_study(str(write_study_text(tmp_path, text))).config.search.pruner.n_warmup_steps == 4


def test_hyperband_resources(tmp_path):
    (line,) = pruner_errors(tmp_path, "{name: hyperband, min_resource: 3, max_resource: 3}")
    assert "max_resource must exceed min_resource" in line
    (line,) = pruner_errors(tmp_path, "{name: hyperband, max_resource: 12}", "{eval_points: 10}")
    assert "max_resource: 12 is more than the training.eval_points 10" in line
    (line,) = pruner_errors(tmp_path, "{name: successive_halving, min_resource: 0}")
    assert "min_resource must be at least 1" in line
