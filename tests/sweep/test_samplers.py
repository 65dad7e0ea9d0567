"""Every sampler builds from a study file's section and samples valid, repeatable configurations of the real space.

The space is the shipped ``full-space`` study's: a continuous log learning rate, an epoch range,
rank choices, alpha as a multiple of the rank and rsLoRA only at the two larger ranks.
"""

from __future__ import annotations

import math
import warnings

import optuna
import pytest

from sweep.schema.samplers import SAMPLERS, SINGLE_OBJECTIVE_SAMPLERS, SamplerConfig, build_sampler, grid_of
from sweep.schema.study_file import load_study
from tests.sweep.live_study import MINIMAL_STUDY, STUDIES, study_errors, write_study_text

MODEL_BASED = ["tpe", "random", "gp", "cmaes", "qmc", "nsgaii"]


def full_space():
    return load_study(str(STUDIES / "full-space.yaml"), resolve_paths=False).config.search.params


def sample_study(name: str, seed: int, space, n_trials: int) -> list[dict]:
    """The values a seeded study samples; each trial's 'loss' is a fixed bowl around lr 2e-4, r 16."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(sampler=build_sampler(SamplerConfig(name=name, seed=seed, n_startup_trials=3), space))
    sampled = []

    def objective(trial):
        values = space.sample(trial)
        sampled.append({**values, "suggested": sorted(trial.params)})
        return abs(math.log10(values["learning_rate"] / 2e-4)) + abs(math.log2(values["r"] / 16)) \
            + 0.1 * values["num_train_epochs"] + 0.05 * values["use_rslora"]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental-feature notes
        study.optimize(objective, n_trials=n_trials)
    return sampled


@pytest.mark.parametrize("name", MODEL_BASED)
def test_sampler_samples_valid_configurations_and_repeats_with_its_seed(name):
    space = full_space()
    first = sample_study(name, 7, space, n_trials=6)
    for values in first:
        assert space.learning_rate.contains(values["learning_rate"])
        assert space.num_train_epochs.contains(values["num_train_epochs"])
        assert values["r"] in space.r.choices
        assert values["lora_alpha"] / values["r"] in space.lora_alpha.alpha_per_rank
        conditional = values["r"] in space.use_rslora.only_for_r
        # rsLoRA is searched only at its ranks; elsewhere it is off and not even a trial parameter
        assert ("use_rslora" in values["suggested"]) == conditional
        assert conditional or values["use_rslora"] is False
    assert sample_study(name, 7, space, n_trials=6) == first
    assert sample_study(name, 8, space, n_trials=6) != first


def test_grid_sampler_covers_a_choice_space():
    space = load_study(str(STUDIES / "grid-tiny.yaml")).config.search.params
    grid = grid_of(space)
    assert grid == {"learning_rate": [1e-3, 4e-3, 1.6e-2, 6.4e-2], "num_train_epochs": [1, 2, 3], "r": [4, 8, 16],
                    "use_rslora": [False, True], "alpha_per_rank": [1, 2]}
    sampled = sample_study("grid", 0, space, n_trials=144)
    keys = {(v["learning_rate"], v["num_train_epochs"], v["r"], v["lora_alpha"], v["use_rslora"]) for v in sampled}
    assert len(keys) == 144
    assert sample_study("grid", 0, space, n_trials=10) == sampled[:10]


def test_tpe_is_multivariate_by_default():
    sampler = build_sampler(SamplerConfig(), full_space())
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert sampler._multivariate and sampler._group


def test_grid_sampler_needs_choices_and_no_conditional_rslora(tmp_path):
    (line,) = study_errors(write_study_text(tmp_path, MINIMAL_STUDY + "  sampler: {name: grid}\n"))
    assert "search: sampler grid: the grid sampler needs choices for learning_rate" in line
    conditional = MINIMAL_STUDY.replace("learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}", "learning_rate: 1.0e-3") \
        + "    use_rslora: {choices: [true, false], only_for_r: [8]}\n  sampler: {name: grid}\n"
    (line,) = study_errors(write_study_text(tmp_path, conditional))
    assert "use_rslora with only_for_r would train every other rank twice" in line


def test_gp_sampler_is_refused_with_a_pruner(tmp_path):
    (line,) = study_errors(write_study_text(tmp_path, MINIMAL_STUDY + "  sampler: {name: gp}\n"))  # the default pruner is percentile
    assert "sampler gp with pruner percentile: the GP sampler learns only from completed trials" in line
    assert load_study(str(write_study_text(tmp_path, MINIMAL_STUDY + "  sampler: {name: gp}\n  pruner: {name: none}\n")))


@pytest.mark.parametrize("name", SAMPLERS)
def test_the_samplers_refused_for_several_objectives_are_those_optuna_refuses(name):
    space = load_study(str(STUDIES / "grid-tiny.yaml")).config.search.params  # choices only: every sampler fits
    study = optuna.create_study(directions=["minimize", "minimize"],
                                sampler=build_sampler(SamplerConfig(name=name, seed=1, n_startup_trials=2), space))

    def objective(trial):
        values = space.sample(trial)
        return values["learning_rate"] * values["num_train_epochs"], float(values["r"])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental-feature notes
        if name in SINGLE_OBJECTIVE_SAMPLERS:
            with pytest.raises(ValueError, match="multi-objective"):
                study.optimize(objective, n_trials=4)
            return
        study.optimize(objective, n_trials=4)
    assert len(study.trials) == 4 and study.best_trials
