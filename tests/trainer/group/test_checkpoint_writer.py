"""A group's checkpoints are written by a thread while the group trains on: each holds its step's state, whatever
the step after it changes, the newest replaces the older, and one that cannot be written fails its trial only."""

from __future__ import annotations

import json
import threading

import torch
from safetensors.torch import load_file

from tests.trainer.group.test_stacked_lora import group, steps
from trainer.group import checkpoint
from trainer.group.checkpoint import OPTIMIZER_FILE, STATE_FILE, CheckpointWriter
from trainer.group.peft_format import WEIGHTS_FILE
from trainer.trial_folder import CHECKPOINT_DIR


def test_a_checkpoint_holds_its_step_s_state_while_the_group_trains_on(tmp_path, monkeypatch):
    trainer = group(tmp_path, [{"r": 4}, {"r": 8}])
    steps(trainer, 2)
    member = trainer.members[0]
    at_two = {name: (a.clone(), b.clone()) for name, (a, b) in trainer.adapter_weights(member).items()}
    moments = member.optimizer.state_dict()["state"]
    go, write = threading.Event(), checkpoint.write_snapshot
    monkeypatch.setattr(checkpoint, "write_snapshot", lambda saved, base: go.wait() and write(saved, base))

    writer = CheckpointWriter()
    writer.save(member, trainer.adapter_weights(member), "base")
    steps(trainer, 1)  # the stack's weights and moments change in place before the checkpoint is written
    go.set()
    writer.settle(member.spec.out)

    folder = member.spec.out / CHECKPOINT_DIR / "checkpoint-2"
    saved = load_file(folder / WEIGHTS_FILE)
    for name, (a, b) in at_two.items():
        assert torch.equal(saved[f"base_model.model.{name}.lora_A.weight"], a)
        assert torch.equal(saved[f"base_model.model.{name}.lora_B.weight"], b)
        assert not torch.equal(trainer.adapter_weights(member)[name][0], a)  # it did train on
    written = torch.load(folder / OPTIMIZER_FILE, weights_only=False)["optimizer"]["state"]
    assert all(torch.equal(written[i]["exp_avg"], m["exp_avg"]) for i, m in moments.items())
    assert json.loads((folder / STATE_FILE).read_text())["global_step"] == 2

    writer.save(member, trainer.adapter_weights(member), "base")
    writer.settle()
    assert [p.name for p in (member.spec.out / CHECKPOINT_DIR).glob("checkpoint-*")] == ["checkpoint-3"]


def test_a_checkpoint_that_cannot_be_written_fails_its_own_trial_only(tmp_path):
    trainer = group(tmp_path, [{"r": 4}, {"r": 4}])
    steps(trainer, 1)
    bad, good = trainer.members
    bad.spec.out.mkdir(parents=True, exist_ok=True)
    (bad.spec.out / CHECKPOINT_DIR).write_text("a file where the checkpoints folder goes\n")

    writer = CheckpointWriter()
    for member in (bad, good):
        writer.save(member, trainer.adapter_weights(member), "base")
    writer.settle()
    failed = writer.failed()
    assert list(failed) == [bad.spec.out] and isinstance(failed[bad.spec.out], OSError)
    assert (good.spec.out / CHECKPOINT_DIR / "checkpoint-1" / STATE_FILE).exists()
    assert writer.failed() == {}  # handed over once
