"""``keep_adapter: best_eval``: the trial keeps the adapter of its eval point with the lowest eval loss, and
that best survives a kill and a resume.

The trial overfits on purpose (8 training rows, 16 steps at a constant learning rate): its eval loss
falls, then rises, so its best point is not its last. A run of the same spec stopped at the best step
(``max_steps``) trains the very same steps on the CPU, so its weights, eval loss and sample answers are
what the best point's adapter must hold, to the bit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.sweep.live_study import ROOT, TINY_MODEL, checkpoint_saved, demo_data_slice, run_trainer, sweep_env, wait_for
from trainer.spec import TrialSpec
from trainer.trial_folder import ADAPTER_DIR, ADAPTER_EVAL_FILE, ADAPTER_WEIGHTS_FILES

STEPS, POINTS = 16, 8  # an evaluation (and checkpoint) every 2 steps


def write_spec(folder: Path, **changes) -> Path:
    """A spec that overfits 8 rows in ``STEPS`` steps, keeping its best adapter; ``changes`` update it."""
    train, evaluation = demo_data_slice(folder, 8, 16)
    out = folder / "trial"
    out.mkdir(parents=True, exist_ok=True)
    spec = {
        "study": "best", "trial_number": 0, "output_dir": str(out), "study_uid": "uid-best",
        "model": {"name_or_path": str(TINY_MODEL), "max_seq_length": 128, "load_in_4bit": False,
                  "chat_template": "llama-3", "dtype": "float32"},
        "data": {"train": str(train), "eval": str(evaluation)},
        "lora": {"r": 8, "lora_alpha": 16},
        "training": {"learning_rate": 5e-2, "num_train_epochs": 1, "max_steps": STEPS, "eval_points": POINTS,
                     "lr_scheduler_type": "constant", "per_device_train_batch_size": 8,
                     "per_device_eval_batch_size": 16, "warmup_steps": 1, "optim": "adamw_torch",
                     "weight_decay": 0.0},
        "samples": {"count": 2, "max_new_tokens": 8},
        "backend": "transformers", "keep_adapter": "best_eval",
    }
    for section, values in changes.items():
        spec[section] = {**spec[section], **values} if isinstance(values, dict) else values
    path = out / "spec.json"
    TrialSpec.model_validate(spec).write(path)
    return path


def weights(trial_dir: Path) -> dict:
    return load_file(str(trial_dir / ADAPTER_DIR / ADAPTER_WEIGHTS_FILES[0]))


def result_of(events: list[dict]) -> dict:
    return events[-1] if events[-1]["event"] == "result" else pytest.fail(f"no result: {events[-1]}")


@pytest.fixture(scope="module")
def best_run(tmp_path_factory):
    """The overfitting trial, run once: (its folder, its events)."""
    spec = write_spec(tmp_path_factory.mktemp("best-run"))
    return spec.parent, run_trainer(spec)


def test_the_trial_keeps_the_adapter_of_its_best_eval_point(best_run, tmp_path):
    trial_dir, events = best_run
    curve = [(e["step"], e["eval_loss"]) for e in events if e["event"] == "eval"]
    assert [step for step, _ in curve] == list(range(2, STEPS + 1, 2))
    best_step, best_loss = min(curve, key=lambda point: point[1])
    assert best_step < STEPS, curve  # else this trial would not tell the best adapter from the last
    result = result_of(events)
    assert result["status"] == "ok" and result["eval_loss"] == curve[-1][1]
    assert (result["adapter_step"], result["adapter_eval_loss"]) == (best_step, best_loss)
    assert json.loads((trial_dir / ADAPTER_DIR / ADAPTER_EVAL_FILE).read_text())["step"] == best_step

    stopped_there = write_spec(tmp_path, training={"max_steps": best_step}, keep_adapter="last")
    again = result_of(run_trainer(stopped_there))
    assert again["eval_loss"] == best_loss and again["adapter_step"] == best_step
    kept, reference = weights(trial_dir), weights(stopped_there.parent)
    assert kept.keys() == reference.keys() and all((kept[k] == reference[k]).all() for k in kept)
    assert result["samples"] == again["samples"]  # answered by the kept weights, not the last ones
    assert result["chrf"] == again["chrf"]


def test_a_killed_and_resumed_trial_keeps_the_best_of_both_runs(best_run, tmp_path):
    trial_dir, events = best_run
    expected = result_of(events)
    spec = write_spec(tmp_path)
    resume_at = STEPS // 2  # past the best point: the resumed run must not take its first eval as the best
    assert expected["adapter_step"] < resume_at
    trainer = subprocess.Popen([sys.executable, "-m", "trainer", str(spec)], cwd=ROOT, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=sweep_env(SWEEP_TEST_FAULT=f"hang@{resume_at + 1}"))
    try:
        wait_for(lambda: checkpoint_saved(spec.parent, resume_at), 300, f"the checkpoint of step {resume_at}")
    finally:
        os.killpg(trainer.pid, signal.SIGKILL)
        trainer.wait(timeout=60)

    resumed_events = run_trainer(spec)
    setup = next(e for e in resumed_events if e["event"] == "setup")
    assert setup["resumed_from_step"] == resume_at
    result = result_of(resumed_events)
    assert (result["adapter_step"], result["adapter_eval_loss"]) == (expected["adapter_step"],
                                                                      expected["adapter_eval_loss"])
    assert result["eval_loss"] == expected["eval_loss"]
    kept, reference = weights(spec.parent), weights(trial_dir)
    assert all((kept[k] == reference[k]).all() for k in reference)
    assert result["samples"] == expected["samples"]


def test_a_trial_started_afresh_removes_an_adapter_left_in_its_folder(tmp_path):
    spec = write_spec(tmp_path, training={"max_steps": 2, "eval_points": 1}, samples={"count": 0})
    stale = spec.parent / ADAPTER_DIR
    stale.mkdir()
    (stale / ADAPTER_EVAL_FILE).write_text(json.dumps({"step": 1, "eval_loss": 0.001, "owner": {}}))
    result = result_of(run_trainer(spec))
    assert result["adapter_step"] == 2 and result["adapter_eval_loss"] == result["eval_loss"] > 0.001
    assert json.loads((stale / ADAPTER_EVAL_FILE).read_text())["step"] == 2
