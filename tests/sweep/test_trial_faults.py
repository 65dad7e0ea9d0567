"""Faults inside trials, for real: a trainer that crashes, is killed, hangs past the time limit or
runs out of memory (simulated through ``SWEEP_TEST_FAULT``) fails its trial with a reason, and the
study goes on to its total."""

from __future__ import annotations

import json
import os
import signal

from optuna.trial import TrialState

from tests.sweep.live_study import (
    assert_no_trainer_left,
    assert_study_finished_exactly,
    events,
    fake_nvidia_smi,
    run_sweep,
    start_sweep,
    study_trials,
    wait_for,
    write_study,
)


def test_crash_kill_hang_and_oom_fail_their_trials_and_the_study_goes_on(tmp_path):
    study = write_study(tmp_path, "faults", 2, max_steps=6, eval_points=3, execution={"timeout_minutes": 1.0})
    runs = tmp_path / "runs"
    # two "GPUs" so that a hanging trial leaves a slot to the others (the trainers run on the CPU)
    path = fake_nvidia_smi(tmp_path / "bin", "0, 80000, 81559\\n1, 80000, 81559\\n") + ":" + os.environ["PATH"]
    faults = "hang@2:trial=0,crash@2:trial=2,oom@2:trial=3,oom_above_batch_4@2:trial=4"
    sweep = start_sweep(study, runs, "--gpus", "0,1", SWEEP_TEST_FAULT=faults, PATH=path)
    trial_1 = runs / "faults" / "trials" / "00001"
    wait_for(lambda: any(e["event"] == "progress" for e in events(trial_1)), 240, "trial 1 to train")
    os.kill(next(e["pid"] for e in events(trial_1) if e["event"] == "started"), signal.SIGKILL)
    assert sweep.wait(timeout=480) == 0, (tmp_path / "faults.log").read_text()

    trials = {t.number: t for t in study_trials(runs, "faults")}
    reasons = {n: t.user_attrs.get("fail_reason") for n, t in trials.items() if t.state == TrialState.FAIL}
    assert reasons[0] == "timeout"
    assert reasons[1] == "crash: trainer killed by SIGKILL"
    assert reasons[2].startswith("crash: RuntimeError: injected crash")
    assert reasons[3] == "oom" and trials[3].user_attrs["oom_retry"].startswith("micro-batch 8 -> 4")
    assert set(reasons) == {0, 1, 2, 3}, reasons
    complete = assert_study_finished_exactly(trials.values(), 2)
    assert [t.number for t in complete] == [4, 5]
    assert trials[4].user_attrs["oom_retry"] == "micro-batch 8 -> 4, gradient accumulation 1 -> 2"
    spec = json.loads((runs / "faults" / "trials" / "00004" / "spec.json").read_text())
    assert (spec["training"]["per_device_train_batch_size"], spec["training"]["gradient_accumulation_steps"]) == (4, 2)
    assert {p["device"] for t in trials.values() for p in t.user_attrs["placements"]} == {"0", "1"}
    assert not any("retry_of" in t.user_attrs for t in trials.values()), "a trial's own fault is not retried"
    assert_no_trainer_left(runs)


def test_trial_out_of_memory_beside_another_is_placed_again_alone(tmp_path):
    study = write_study(tmp_path, "shared-oom", 2, max_steps=6, eval_points=3)
    runs = tmp_path / "runs"
    done = run_sweep(study, runs, "--trials-per-gpu", "2", SWEEP_TEST_FAULT="oom_if_shared@2")
    assert done.returncode == 0, done.stdout + done.stderr

    trials = study_trials(runs, "shared-oom")
    complete = assert_study_finished_exactly(trials, 2)
    assert len(trials) == 2, "nothing failed: the trial that did not fit was placed again, not lost"
    replaced = [t for t in complete if "oom_replaced" in t.user_attrs]
    assert len(replaced) == 1
    assert [(p["trials_on_device"], p["exclusive"]) for p in replaced[0].user_attrs["placements"]] == \
        [(2, False), (1, True)]
    assert not any("oom_retry" in t.user_attrs for t in complete), "placed alone, it kept its micro-batch"
