"""``execution.backend: grouped``: the trials placed on one device train together in one group worker.

Each trial must come out as if it had trained alone (on the CPU, with the bit-exact ``loop`` routing,
the very same eval loss), write its own folder and PEFT adapter, and a dead worker must cost only
the trials inside it.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import yaml

from tests.sweep.live_study import (
    MINIMAL_STUDY,
    assert_adapters_load,
    assert_study_finished_exactly,
    events,
    run_sweep,
    run_trainer,
    start_sweep,
    study_errors,
    study_trials,
    wait_for,
    write_study,
    write_study_text,
)


def grouped_study(tmp_path, n_trials: int, samples: dict | None = None, **execution):
    path = write_study(tmp_path, "grp", n_trials, max_steps=6, eval_points=3, samples=samples,
                       execution={"backend": "grouped", **execution},
                       enqueue=[{"learning_rate": 2e-2, "r": 8}, {"learning_rate": 3e-3, "r": 4}])
    study = yaml.safe_load(path.read_text())
    study["model"]["dtype"] = "float32"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


@pytest.mark.parametrize(("extra", "expected"), [
    ("training: {optim: sgd}\nexecution: {backend: grouped}\n",
     "training.optim 'sgd': the grouped backend trains with AdamW"),
    ("training: {packing: true}\nexecution: {backend: grouped}\n", "training.packing true: the grouped backend"),
    ("lora: {bias: all}\nexecution: {backend: grouped}\n", "lora.bias 'all': the grouped backend"),
    ("lora: {lora_dropout: 0.1}\nexecution: {backend: grouped, group_matmul: stacked}\n",
     "execution.group_matmul stacked trains without LoRA dropout"),
    ("execution: {backend: grouped, group_cuda_graphs: true}\n",
     "execution.group_cuda_graphs true: CUDA graphs capture the stacked step only, but group_matmul is 'loop'"),
])
def test_what_a_group_cannot_train_is_refused_in_one_line(tmp_path, extra, expected):
    (line,) = study_errors(write_study_text(tmp_path, MINIMAL_STUDY + extra))
    assert expected in line


def started_pid(trial) -> int:
    return next(e["pid"] for e in events(Path(trial.user_attrs["trial_dir"])) if e["event"] == "started")


def test_trials_on_one_device_train_in_one_worker_as_if_alone(tmp_path):
    study = grouped_study(tmp_path, 3)
    runs = tmp_path / "runs"
    done = run_sweep(study, runs, "--trials-per-gpu", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    complete = assert_study_finished_exactly(study_trials(runs, "grp"), 3)
    assert len({started_pid(t) for t in complete}) == 1  # one process trained them all
    assert all(t.user_attrs["backend"] == "grouped" for t in complete)
    assert_adapters_load(complete)
    for trial in complete[:2]:  # the same trial alone, in a fresh folder: the same eval loss, bit for bit
        alone = tmp_path / f"alone-{trial.number}"
        spec = json.loads((Path(trial.user_attrs["trial_dir"]) / "spec.json").read_text())
        spec["output_dir"] = str(alone)
        alone.mkdir()
        (alone / "spec.json").write_text(json.dumps(spec))
        result = [e for e in run_trainer(alone / "spec.json") if e["event"] == "result"][-1]
        assert result["eval_loss"] == trial.value


def test_a_killed_group_worker_costs_only_its_trials(tmp_path):
    study = grouped_study(tmp_path, 4)
    runs = tmp_path / "runs"
    sweep = start_sweep(study, runs, "--trials-per-gpu", "2")
    try:
        training = wait_for(lambda: _training(runs), 300, "a trial training in the group worker")
        os.kill(training["pid"], signal.SIGKILL)
        assert sweep.wait(600) == 0
    finally:
        if sweep.poll() is None:
            sweep.kill()
    trials = study_trials(runs, "grp")
    failed = [t for t in trials if t.state.name == "FAIL"]
    # the worker held at most three: two training and one waiting to join (handed_over)
    assert 1 <= len(failed) <= 3 and all(t.user_attrs["fail_reason"].startswith("crash") for t in failed), \
        [(t.number, t.user_attrs.get("fail_reason")) for t in failed]
    assert len([t for t in trials if t.state.name == "COMPLETE"]) == 4
    pids = {started_pid(t) for t in trials if t.state.name == "COMPLETE"}
    assert training["pid"] not in pids  # the trials after the kill ran in a new worker


def _training(runs: Path) -> dict | None:
    """The started event of a trial that has made a training step and not ended, if any."""
    for folder in sorted((runs / "grp" / "trials").glob("*")):
        trial_events = events(folder)
        kinds = {e["event"] for e in trial_events}
        if "progress" in kinds and "result" not in kinds:
            return next(e for e in trial_events if e["event"] == "started")
    return None


@pytest.mark.parametrize("execution", [{}, {"group_matmul": "stacked", "group_cuda_graphs": True}],
                         ids=["loop", "stacked-graphs"])
def test_a_worker_trains_trials_per_gpu_at_once_with_the_next_ones_waiting_in_it(tmp_path, execution):
    """--trials-per-gpu 2: the worker is handed three trials at once (one waits to join), never trains more than
    two at once, and writes where its time went (with group_cuda_graphs, its graphs: none on the CPU, where the
    steps it would capture run eagerly)."""
    study = grouped_study(tmp_path, 5, samples={"count": 2, "max_new_tokens": 4}, **execution)
    runs = tmp_path / "runs"
    done = run_sweep(study, runs, "--trials-per-gpu", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    complete = assert_study_finished_exactly(study_trials(runs, "grp"), 5)
    assert len({started_pid(t) for t in complete}) == 1
    spans = [(t.datetime_start, t.datetime_complete) for t in complete]
    assert max(sum(start <= s < end for start, end in spans) for s, _ in spans) == 3  # handed over at once
    sizes = [int(note.split("=")[1]) for t in complete for e in events(Path(t.user_attrs["trial_dir"]))
             if e["event"] == "setup" for note in e["notes"] if note.startswith("group=")]
    assert len(sizes) == 5 and max(sizes) <= 2  # but trained two at most
    assert all(len(t.user_attrs["samples"]) == 2 for t in complete)
    [worker] = (runs / "grp" / "workers").glob("group-*")
    ledger = json.loads((worker / "ledger.json").read_text())
    assert ledger["sampled"] == 5 and ledger["mean_members"] <= 2
    assert ledger["tokens"] == sum(t.user_attrs["train_tokens"] for t in complete)
    assert ledger.get("graph_captures") == (0 if execution else None)  # the study's choice reached the trainer
    log = (worker / "trainer.log").read_text()
    assert "training at most 2 trials at once" in log and "group: " in log


def test_a_trial_waiting_in_a_group_worker_is_not_timed_out_for_its_wait(tmp_path):
    """--trials-per-gpu 1 hands trials 0 and 1 to the worker at once: whichever joins first trains and hangs, the
    other waits. The first fails as `timeout` and takes the worker with it; the other's time limit had not
    started (it never joined), and it was lost only with the worker stopped for the first: it is not failed as
    a timeout it never ran into, nor counted as a failure, but tried again in a new worker (as after a
    Ctrl-C), where it completes."""
    study = grouped_study(tmp_path, 2, timeout_minutes=0.2)
    runs = tmp_path / "runs"
    done = run_sweep(study, runs, "--trials-per-gpu", "1", SWEEP_TEST_FAULT="hang@3:trial=0,hang@3:trial=1")
    assert done.returncode == 0, done.stdout + done.stderr
    trials = study_trials(runs, "grp")
    reasons = {t.number: t.user_attrs.get("fail_reason", "") for t in trials if t.state.name == "FAIL"}
    assert sorted(reasons) == [0, 1] and sorted(reasons.values()) == ["interrupted", "timeout"], reasons
    [innocent] = [number for number, reason in reasons.items() if reason == "interrupted"]
    assert trials[innocent].user_attrs["fail_detail"] == "its group worker was stopped for another trial"
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 2
    assert [t.params for t in complete if t.user_attrs.get("retry_of") == innocent] == [trials[innocent].params]
