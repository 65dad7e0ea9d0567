"""Studies replayed on the recorded tiny-model grid: sampling, enqueueing and pruning logic in seconds.

The table (``bench/data/tiny_grid.jsonl``) is 144 real trainer runs; the replay feeds their eval
points to the same reporting and pruning code as a real study (``sweep/run/eval_reporter.py``).
"""

from __future__ import annotations

import math

import optuna
import pytest

from bench.replay import CurveTable, config_key, replay_study
from sweep.schema.pruners import PrunerConfig
from sweep.schema.samplers import SamplerConfig
from sweep.schema.study_file import SearchConfig, load_study
from tests.sweep.live_study import ROOT, STUDIES

TABLE = CurveTable.load(ROOT / "bench" / "data" / "tiny_grid.jsonl")


def search(sampler: str = "tpe", pruner: str = "median", n_trials: int = 40, seed: int = 0, **kwargs) -> SearchConfig:
    return SearchConfig(n_trials=n_trials, params=kwargs.pop("params", TABLE.space()),
                        sampler=SamplerConfig(name=sampler, seed=seed), pruner=PrunerConfig(name=pruner), **kwargs)


def test_table_is_the_recorded_grid_with_curves_that_differ():
    grid = load_study(str(STUDIES / "grid-tiny.yaml")).config.search.params
    assert len(TABLE.curves) == 144
    assert {config_key(c.params) for c in TABLE.curves.values()} == set(TABLE.curves)
    assert TABLE.choices("learning_rate") == grid.learning_rate.choices
    assert all(len(c.points) == 6 and c.points[-1]["eval_loss"] == c.eval_loss for c in TABLE.curves.values())
    finals = [c.eval_loss for c in TABLE.curves.values()]
    assert max(finals) - min(finals) > 1.0
    # the learning-rate range spans too low to too high: the best rate is an inner one
    best_lr = min(TABLE.curves.values(), key=lambda c: c.eval_loss).params["learning_rate"]
    assert best_lr not in (min(grid.learning_rate.choices), max(grid.learning_rate.choices))


def test_grid_sampler_replays_every_configuration_exactly_once():
    objective = replay_study(search("grid", "none", n_trials=500), TABLE)
    keys = [config_key(e["values"]) for e in objective.log]
    assert len(keys) == 144 and set(keys) == set(TABLE.curves)
    assert math.isclose(objective.spent_seconds, TABLE.total_seconds())
    assert objective.best_value == TABLE.best_value


def test_enqueued_configurations_run_first_in_order():
    enqueue = [{"learning_rate": 1.6e-2, "num_train_epochs": 3, "r": 16, "lora_alpha": 32, "use_rslora": False},
               {"learning_rate": 1e-3, "num_train_epochs": 1, "r": 4, "lora_alpha": 4, "use_rslora": True}]
    objective = replay_study(search(n_trials=5, enqueue=enqueue), TABLE)
    assert [e["values"] for e in objective.log[:2]] == enqueue
    assert len(objective.log) == 5


def test_conditional_space_samples_rslora_only_at_its_ranks():
    objective = replay_study(search(params=TABLE.space(rslora_only_for_r=[16]), n_trials=30), TABLE)
    for trial in objective.study.trials:
        assert ("use_rslora" in trial.params) == (trial.params["r"] == 16)
        assert trial.user_attrs["lora_alpha"] == trial.params["r"] * trial.params["alpha_per_rank"]


def test_trials_report_eval_points_and_pruned_ones_are_charged_to_their_stop():
    objective = replay_study(search("random", "median", n_trials=60, seed=1), TABLE)
    trials = objective.study.trials
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned and len(pruned) < len(trials)
    for trial, entry in zip(trials, objective.log, strict=True):
        if entry["repeat"]:
            continue  # see the next test
        curve = TABLE.lookup(entry["values"])
        points = sorted(trial.intermediate_values)
        assert points == list(range(1, len(points) + 1))
        assert [loss for _, loss in trial.user_attrs["eval_losses"]] == [p["eval_loss"] for p in curve.points[:len(points)]]
        if trial.state == optuna.trial.TrialState.PRUNED:
            assert points[-1] >= 3  # the default warm-up: never before the third point
            assert entry["seconds"] == curve.points[points[-1] - 1]["seconds"] < curve.seconds
        else:
            assert entry["seconds"] == curve.seconds and trial.value == curve.eval_loss
    assert math.isclose(objective.spent_seconds, sum(e["seconds"] for e in objective.log))


def test_a_configuration_proposed_again_takes_the_earlier_outcome_at_no_cost():
    objective = replay_study(search("tpe", "median", n_trials=80, seed=3), TABLE)
    trials = objective.study.trials
    repeats = [t for t in trials if "repeat_of" in t.user_attrs]
    assert repeats, "TPE on this discrete space proposes configurations again"
    assert {trials[t.user_attrs["repeat_of"]].state for t in repeats} == {optuna.trial.TrialState.COMPLETE,
                                                                         optuna.trial.TrialState.PRUNED}
    for trial in repeats:
        original = trials[trial.user_attrs["repeat_of"]]
        assert original.params == trial.params and "repeat_of" not in original.user_attrs
        assert (trial.state, trial.value) == (original.state, original.value)
        # a pruned repeat shows the samplers its curve; a completed one only its value, so the pruner's
        # per-point statistics count each run once
        pruned = trial.state == optuna.trial.TrialState.PRUNED
        assert trial.intermediate_values == (original.intermediate_values if pruned else {})
        assert objective.log[trial.number]["seconds"] == 0
    trained = [e["values"] for e in objective.log if not e["repeat"]]
    assert len({config_key(v) for v in trained}) == len(trained)  # no configuration trained twice


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_default_pruner_saves_time_without_pruning_the_winners(sampler):
    """Over 10 seeds of 60 trials, the median pruner stops many trials but few of the grid's best tenth."""
    ranked = sorted(TABLE.curves, key=lambda key: TABLE.curves[key].eval_loss)
    top = set(ranked[: len(ranked) // 10])
    pruned = trials = winners = winners_pruned = 0
    for seed in range(10):
        log = [e for e in replay_study(search(sampler, "median", n_trials=60, seed=seed), TABLE).log
               if not e["repeat"]]
        trials += len(log)
        pruned += sum(e["value"] is None for e in log)
        won = [e for e in log if config_key(e["values"]) in top]
        winners += len(won)
        winners_pruned += sum(e["value"] is None for e in won)
    assert pruned / trials > 0.4
    assert winners >= 20 and winners_pruned / winners < 0.5 * pruned / trials


def test_a_learning_rate_range_is_answered_by_the_nearest_recorded_rate():
    space = TABLE.space(lr_range=True)
    rates = TABLE.choices("learning_rate")
    assert math.isclose(space.learning_rate.low, rates[0] / 2) and math.isclose(space.learning_rate.high, rates[-1] * 2)
    objective = replay_study(search("random", "none", n_trials=40, params=space), TABLE)
    sampled = [e["values"]["learning_rate"] for e in objective.log]
    assert len(set(sampled)) == 40 and not set(sampled) & set(rates)
    for entry in objective.log:
        rate = entry["values"]["learning_rate"]
        nearest = TABLE.lookup(entry["values"], snap_lr=True).params["learning_rate"]
        assert all(abs(math.log(nearest / rate)) <= abs(math.log(r / rate)) for r in rates)
        assert entry["value"] == TABLE.lookup({**entry["values"], "learning_rate": nearest}).eval_loss
    with pytest.raises(KeyError, match="was not recorded"):
        TABLE.lookup(objective.log[0]["values"])
