"""Warm start: a new study begins with an earlier study's finished trials, trains n_trials of its own."""

from __future__ import annotations

from optuna.trial import TrialState

from tests.sweep.live_study import run_sweep, study_trials, write_study
from tests.sweep.test_trusted_results import edit


def test_a_warm_start_copies_the_earlier_trials_inside_the_space_and_trains_n_trials_more(tmp_path):
    runs = tmp_path / "runs"
    assert run_sweep(write_study(tmp_path, "first", 2, max_steps=4, eval_points=2), runs).returncode == 0
    earlier = study_trials(runs, "first")
    inside = [t for t in earlier if t.params["r"] == 8]

    later = write_study(tmp_path, "later", 1, max_steps=4, eval_points=2, enqueue=[{"learning_rate": 3e-3, "r": 8}])
    edit(later, lambda c: (c["search"].update(warm_start={"study": "first"}),
                           c["search"]["params"].update(r={"choices": [8]})))
    done = run_sweep(later, runs)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"warm start: {len(inside)} of 2 finished trials of first copied in" in done.stdout

    trials = study_trials(runs, "later")
    copies = [t for t in trials if "warm_start_from" in t.user_attrs]
    own = [t for t in trials if "warm_start_from" not in t.user_attrs]
    assert sorted(t.value for t in copies) == sorted(t.value for t in inside)
    assert [t.state for t in own] == [TrialState.COMPLETE] and own[0].params["learning_rate"] == 3e-3
    again = run_sweep(later, runs)  # resumed: the copies are not counted, nothing more to do, nothing copied twice
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert len(study_trials(runs, "later")) == len(trials)


def test_a_warm_start_from_a_study_that_does_not_exist_is_one_line(tmp_path):
    runs = tmp_path / "runs"
    later = write_study(tmp_path, "orphan", 1)
    edit(later, lambda c: c["search"].update(warm_start={"study": "nowhere"}))
    done = run_sweep(later, runs)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert "search.warm_start.study: 'nowhere'" in line
    assert not (runs / "orphan" / "study.db").exists()  # refused before the study exists
