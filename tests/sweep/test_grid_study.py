"""A grid study runs each point of its grid once, across runs, resumes and earlier mistakes.

The first real grid (``bench/data/smollm2_grid.jsonl``) ran 4 points twice and 4 never: each run
shuffled the grid with another seed, so the grid indices its trials held named other points in the
next run. These tests hold the fix: one order in every run, points nobody can reach queued again,
and a study total that counts points.
"""

from __future__ import annotations

import itertools

import optuna
import yaml

from sweep.run.grid_gaps import fill_grid_gaps
from sweep.schema.samplers import SamplerConfig, build_sampler
from sweep.schema.study_file import load_study
from sweep.study.optuna_internals import grid_points
from sweep.study.storage import open_study
from tests.sweep.live_study import run_sweep, study_trials, write_study

GRID = {"learning_rate": [1e-3, 1e-2], "r": [4, 8], "use_rslora": [False, True]}
SIZE = 8


def grid_space(tmp_path):
    path = write_study(tmp_path, "g", n_trials=SIZE)
    study = yaml.safe_load(path.read_text())
    study["search"]["params"] |= {name: {"choices": values} for name, values in GRID.items()}
    study["search"]["sampler"] = {"name": "grid", "seed": 0}
    study["search"]["enqueue"] = []
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path, load_study(str(path)).config.search.params


def run_trials(optuna_study, n: int) -> None:
    """``n`` trials as the trial loop runs them: ask, sample the grid's parameters, tell."""
    for _ in range(n):
        trial = optuna_study.ask()
        values = {name: trial.suggest_categorical(name, choices) for name, choices in GRID.items()}
        optuna_study.tell(trial, values["learning_rate"] * values["r"])


def point_keys(trials) -> list[tuple]:
    return [tuple(sorted(t.params.items())) for t in trials if t.state == optuna.trial.TrialState.COMPLETE]


def test_every_run_of_a_grid_study_shuffles_the_grid_alike(tmp_path):
    _, space = grid_space(tmp_path)
    config = SamplerConfig(name="grid", seed=3)
    first = grid_points(build_sampler(config, space, run_index=0))
    assert grid_points(build_sampler(config, space, run_index=4)) == first
    assert sorted(map(str, first)) == sorted(str(dict(zip(GRID, v, strict=True)))
                                             for v in itertools.product(*GRID.values()))


def test_the_last_grid_point_is_told_without_an_error(tmp_path):
    # Optuna's grid sampler calls study.stop() after the last point, which raises outside study.optimize
    _, space = grid_space(tmp_path)
    optuna_study = open_study(f"sqlite:///{tmp_path / 'g.db'}", "g", heartbeat=(1, 5))
    optuna_study.sampler = build_sampler(SamplerConfig(name="grid"), space)
    run_trials(optuna_study, SIZE)
    assert len(set(point_keys(optuna_study.trials))) == SIZE


def test_points_an_earlier_order_left_out_are_queued_and_counted(tmp_path):
    _, space = grid_space(tmp_path)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    optuna_study = open_study(f"sqlite:///{tmp_path / 'g.db'}", "g", heartbeat=(1, 5))
    # as recorded before the fix: each run shuffled the grid with its own seed
    for run, n in ((0, 3), (1, 3), (2, 2)):
        optuna_study.sampler = optuna.samplers.GridSampler(GRID, seed=run)
        try:
            run_trials(optuna_study, n)
        except RuntimeError:  # the old sampler's study.stop() at what it took for the last point
            pass
    ran = point_keys(optuna_study.trials)
    assert len(ran) == SIZE and len(set(ran)) < SIZE  # all 8 grid indices are held, some points twice

    sampler = build_sampler(SamplerConfig(name="grid"), space, run_index=3)
    optuna_study.sampler = sampler
    total, gaps = fill_grid_gaps(optuna_study, sampler, SIZE)
    assert len(gaps) == SIZE - len(set(ran)) and total == SIZE + len(gaps)
    assert fill_grid_gaps(optuna_study, sampler, SIZE) == (total, [])  # a second worker queues nothing twice
    assert len(optuna_study.get_trials(states=(optuna.trial.TrialState.WAITING,))) == len(gaps)
    run_trials(optuna_study, total - SIZE)
    assert len(set(point_keys(optuna_study.trials))) == SIZE


def test_a_grid_study_resumed_with_another_run_index_runs_each_point_once(tmp_path):
    path, _ = grid_space(tmp_path)
    runs = tmp_path / "runs"
    first = run_sweep(path, runs, "--n-trials", "3")
    assert first.returncode == 0, first.stdout + first.stderr
    second = run_sweep(path, runs)  # the study's second run: a TPE study would reseed here
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Traceback" not in second.stdout + second.stderr
    trials = study_trials(runs, "g")
    assert len(trials) == SIZE and len(set(point_keys(trials))) == SIZE
