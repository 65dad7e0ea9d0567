"""The study's budget: ``search.timeout_hours`` (time, summed over runs) and ``run --n-trials`` (trials)."""

from __future__ import annotations

import yaml
from optuna.trial import TrialState

from sweep.study.time_budget import used_seconds
from tests.sweep.live_study import run_sweep, study_trials, write_study


def test_used_time_is_the_union_of_the_runs_spans():
    assert used_seconds([]) == 0
    assert used_seconds([(0, 100)]) == 100
    assert used_seconds([(0, 100), (50, 160)]) == 160  # two workers side by side count once
    assert used_seconds([(1000, 1010), (0, 100), (20, 30)]) == 110  # a pause between runs does not count


def test_no_trial_starts_once_the_time_budget_is_used_and_a_resume_starts_none(tmp_path):
    path = write_study(tmp_path, "budget", n_trials=5, max_steps=4, eval_points=2)
    raw = yaml.safe_load(path.read_text())
    raw["search"]["timeout_hours"] = 0.001  # 3.6 s: the first trial alone takes longer (imports, model, data)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    runs = tmp_path / "runs"
    done = run_sweep(path, runs)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the study's time budget (search.timeout_hours: 0.001) is used up: no new trials" in done.stdout
    trials = study_trials(runs, "budget")
    assert [t.state for t in trials] == [TrialState.COMPLETE]  # the running trial finished

    again = run_sweep(path, runs)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "time budget (search.timeout_hours: 0.001) is used up; nothing to do" in again.stdout
    assert len(study_trials(runs, "budget")) == 1


def test_n_trials_on_the_command_line_is_a_total_or_more_with_a_plus(tmp_path):
    path = write_study(tmp_path, "count", n_trials=1, max_steps=2, eval_points=1)
    runs = tmp_path / "runs"
    done = run_sweep(path, runs, "--n-trials", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(study_trials(runs, "count")) == 2

    again = run_sweep(path, runs, "--n-trials", "2")  # the same command again: nothing left to do
    assert again.returncode == 0 and "already has 2 finished trials (n_trials: 2); nothing to do" in again.stdout

    more = run_sweep(path, runs, "--n-trials", "+1")
    assert more.returncode == 0, more.stdout + more.stderr
    assert [t.state for t in study_trials(runs, "count")] == [TrialState.COMPLETE] * 3


def test_a_bad_n_trials_is_one_line_and_starts_nothing(tmp_path):
    path = write_study(tmp_path, "bad", n_trials=1)
    for text in ("0", "x", "+0", "-3", "2.5"):
        done = run_sweep(path, tmp_path / "runs", f"--n-trials={text}")
        assert done.returncode == 2, done.stderr
        assert done.stderr == (f"error: --n-trials: {text!r} is not allowed: give a total like 20, or +5 for 5 more "
                               "than now\n")
    assert not (tmp_path / "runs").exists()
