"""Trials trained as one group on the real tiny model: each ends exactly as it ends alone (a group of one),
whoever joins, leaves, stops or fails beside it; and a group of one is the TRL trial."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.sweep.live_study import ROOT, TINY_MODEL
from tests.trainer.group.trial_events import events
from trainer.group.run_group import run_group
from trainer.spec import TrialSpec
from trainer.trial_folder import STOP_FILE

# r, alpha, rsLoRA, learning rate, epochs, and what else differs
TRIALS = {
    0: (4, 16, False, 2e-2, 1, {}),
    1: (16, 8, True, 5e-3, 2, {"lora": {"lora_dropout": 0.1}, "training": {"lr_scheduler_type": "cosine"}}),
    2: (8, 32, False, 1e-2, 3, {"training": {"warmup_ratio": 0.1, "weight_decay": 0.01}}),
}


def spec_for(data, folder, number: int, trial: int | None = None, backend: str = "grouped") -> TrialSpec:
    r, alpha, rslora, lr, epochs, extra = TRIALS[number if trial is None else trial]
    return TrialSpec.model_validate({
        "study": "group", "trial_number": number, "output_dir": str(folder), "backend": backend,
        "model": {"name_or_path": str(TINY_MODEL), "max_seq_length": 256, "load_in_4bit": False,
                  "chat_template": "llama-3", "dtype": "float32"},
        "data": {"train": str(data / "train.jsonl"), "eval": str(data / "eval.jsonl")},
        "lora": {"r": r, "lora_alpha": alpha, "use_rslora": rslora, **extra.get("lora", {})},
        "training": {"learning_rate": lr, "num_train_epochs": epochs, "per_device_train_batch_size": 8,
                     "per_device_eval_batch_size": 8, "warmup_steps": 2, "optim": "adamw_torch", "weight_decay": 0.0,
                     "eval_points": 4, "seed": 3407, **extra.get("training", {})},
        "samples": {"count": 1, "max_new_tokens": 4},
    })


def assert_same_trial(folder, reference) -> None:
    ours = load_file(folder / "adapter" / "adapter_model.safetensors")
    theirs = load_file(reference / "adapter" / "adapter_model.safetensors")
    assert sorted(ours) == sorted(theirs)
    assert all(torch.equal(ours[key], theirs[key]) for key in ours)
    assert events(folder, "eval") == events(reference, "eval")
    assert events(folder, "progress") == events(reference, "progress")


@pytest.fixture(scope="module")
def alone(data, tmp_path_factory):
    """Each trial trained by itself: the reference."""
    root = tmp_path_factory.mktemp("alone")
    for number in TRIALS:
        [result] = run_group([spec_for(data, root / str(number), number)])
        assert result.status == "ok", result.reason
    return root


def test_a_group_trains_each_trial_exactly_as_alone(data, alone, tmp_path):
    specs = [spec_for(data, tmp_path / str(n), n) for n in TRIALS]
    results = run_group(specs, max_live=2)  # trial 2 joins when trial 0 (one epoch) leaves
    assert [r.status for r in results] == ["ok", "ok", "ok"], [r.reason for r in results]
    for number in TRIALS:
        assert_same_trial(tmp_path / str(number), alone / str(number))
    [setup] = events(tmp_path / "2", "setup")
    assert setup["backend"] == "grouped" and "slot=0" in setup["notes"] and "group=2" in setup["notes"]
    assert [e["point"] for e in events(tmp_path / "1", "eval")] == [1, 2, 3, 4]


def test_a_stopped_and_a_failed_member_leave_the_others_untouched(data, alone, tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEP_TEST_FAULT", "crash@3:trial=5")
    specs = [spec_for(data, tmp_path / "0", 0), spec_for(data, tmp_path / "5", 5, trial=1),
             spec_for(data, tmp_path / "6", 6, trial=1), spec_for(data, tmp_path / "2", 2)]
    (tmp_path / "6").mkdir()
    (tmp_path / "6" / STOP_FILE).touch()
    ok, failed, stopped, last = run_group(specs)
    assert (failed.status, failed.steps) == ("error", 0) and "injected crash" in failed.reason
    assert (stopped.status, stopped.steps) == ("stopped", 1)
    assert (ok.status, last.status) == ("ok", "ok")
    assert_same_trial(tmp_path / "0", alone / "0")
    assert_same_trial(tmp_path / "2", alone / "2")
    assert [e["step"] for e in events(tmp_path / "5", "progress")] == [1, 2]  # as the Trainer: no log of the step that raised


def test_batched_matmul_trains_the_same_trials_to_rounding(data, alone, tmp_path):
    specs = [spec_for(data, tmp_path / str(n), n) for n in TRIALS]
    assert all(r.status == "ok" for r in run_group(specs, matmul="bmm"))
    for number in TRIALS:
        ours = [e["eval_loss"] for e in events(tmp_path / str(number), "eval")]
        theirs = [e["eval_loss"] for e in events(alone / str(number), "eval")]
        assert ours == pytest.approx(theirs, rel=1e-4)


def test_the_saved_adapter_loads_in_peft_and_gives_the_reported_eval_loss(data, alone):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.group.batches import eval_batches
    from trainer.trial_data import encode, load_rows

    folder = alone / "1"
    base = AutoModelForCausalLM.from_pretrained(TINY_MODEL, attn_implementation="eager")
    model = PeftModel.from_pretrained(base, str(folder / "adapter")).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder / "adapter")
    spec = TrialSpec.read(folder / "adapter" / "trial_spec.json")
    _, evaluation = encode(spec, tokenizer, *load_rows(spec))
    total = rows = 0
    with torch.no_grad():
        for ids, mask, labels in eval_batches(evaluation.to_list(), 8, tokenizer.pad_token_id):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss  # the batch's token mean
            total, rows = total + loss.item() * len(ids), rows + len(ids)
    assert total / rows == pytest.approx(events(folder, "result")[0]["eval_loss"], rel=1e-6)


def test_a_group_of_one_is_the_trl_trial(data, alone, tmp_path):
    from trainer.run_trial import main as run_trial

    spec = spec_for(data, tmp_path, 1, backend="transformers")
    spec = spec.model_copy(update={"lora": spec.lora.model_copy(update={"lora_dropout": 0.0})})
    grouped = spec.model_copy(update={"backend": "grouped", "output_dir": str(tmp_path / "grouped")})
    for s, name in ((spec, "trl.json"), (grouped, "grouped.json")):
        s.out.mkdir(parents=True, exist_ok=True)
        s.write(tmp_path / name)
        assert run_trial(tmp_path / name) == 0
    trl, ours = events(tmp_path, "progress"), events(tmp_path / "grouped", "progress")
    assert trl[0]["loss"] == ours[0]["loss"]  # same data order, initial adapter and loss: the first step is exact
    assert [e["loss"] for e in ours] == pytest.approx([e["loss"] for e in trl], rel=1e-5)
    assert [e["eval_loss"] for e in events(tmp_path / "grouped", "eval")] == \
        pytest.approx([e["eval_loss"] for e in events(tmp_path, "eval")], rel=1e-6)


def test_backend_grouped_trains_through_python_m_trainer(data, alone, tmp_path):
    spec = spec_for(data, tmp_path, 0)
    spec.write(tmp_path / "spec.json")
    done = subprocess.run([sys.executable, "-m", "trainer", str(tmp_path / "spec.json")], cwd=ROOT, timeout=600,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout + done.stderr
    [result] = events(tmp_path, "result")
    assert result["status"] == "ok" and result["backend"] == "grouped" and len(result["samples"]) == 1
    assert_same_trial(tmp_path, alone / "0")


def test_a_killed_group_resumes_each_trial_from_its_checkpoint(data, alone, tmp_path):
    paths = []
    for number in (0, 1):
        spec = spec_for(data, tmp_path / str(number), number)
        spec.out.mkdir()
        spec.write(tmp_path / f"{number}.json")
        paths.append(str(tmp_path / f"{number}.json"))

    def group(fault: str = "") -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "trainer.group", *paths], cwd=ROOT, timeout=600,
                              capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "SWEEP_TEST_FAULT": fault})

    killed = group("kill@5:trial=0")  # both trials checkpointed at step 4, their second eval point
    assert killed.returncode == -9, killed.stdout + killed.stderr
    assert sorted(p.name for p in (tmp_path / "1" / "checkpoints").iterdir()) == ["checkpoint-4", "owner.json"]
    done = group()
    assert done.returncode == 0, done.stdout + done.stderr
    for number in (0, 1):
        folder = tmp_path / str(number)
        [setup] = events(folder, "setup")[1:]
        assert setup["resumed_from_step"] == 4
        ours = load_file(folder / "adapter" / "adapter_model.safetensors")
        theirs = load_file(alone / str(number) / "adapter" / "adapter_model.safetensors")
        assert all(torch.equal(ours[key], theirs[key]) for key in ours)
        evals = {(e["step"], e["eval_loss"]) for e in events(folder, "eval")}
        assert evals == {(e["step"], e["eval_loss"]) for e in events(alone / str(number), "eval")}
        assert events(folder, "result")[0]["eval_loss"] == events(alone / str(number), "result")[0]["eval_loss"]


def test_train_loss_reports_every_logging_steps_average_the_steps_since_the_last(data, alone, tmp_path):
    """Reports are read a step late (their losses copied behind the step): each still lands at its own step with
    the mean of its steps' losses, its step's learning rate and epoch, and the last step is always reported."""
    every = 5
    spaced = spec_for(data, tmp_path / "2", 2).model_copy(deep=True)
    spaced.training.logging_steps = every
    beside = spec_for(data, tmp_path / "0", 0)
    assert [r.status for r in run_group([beside, spaced])] == ["ok", "ok"]
    each = {e["step"]: e for e in events(alone / "2", "progress")}  # logging_steps 1
    total = max(each)
    reported = events(tmp_path / "2", "progress")
    assert [e["step"] for e in reported] == sorted({*range(every, total + 1, every), total})
    last = 0
    for e in reported:
        window = [each[s]["loss"] for s in range(last + 1, e["step"] + 1)]
        assert e["loss"] == pytest.approx(sum(window) / len(window), rel=1e-12)
        assert (e["learning_rate"], e["epoch"]) == (each[e["step"]]["learning_rate"], each[e["step"]]["epoch"])
        last = e["step"]
    assert events(tmp_path / "0", "progress") == events(alone / "0", "progress")
