"""A group member's checkpoints: written at its eval points, read back when its trial runs again.

A checkpoint is ``checkpoints/checkpoint-<step>/`` in the trial's folder, laid out like the
Trainer's, and bound to its trial like the Trainer's (:mod:`trainer.checkpoints`), so the newest
complete one is found the same way:
the adapter in PEFT's format, ``optimizer.pt`` (optimizer, schedule and dropout generator states)
and, written last, ``trainer_state.json`` (step, micro-batch, evaluations, logged losses). A
process killed while writing leaves a folder without that file, which is skipped and removed.
Only the newest checkpoint is kept (the Trainer's ``save_total_limit=1``).

Resumed, a member continues with the same data order, weights and optimizer state, so it ends
exactly where the uninterrupted trial ends.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from trainer import checkpoints
from trainer.group.member import Member
from trainer.group.peft_format import WEIGHTS_FILE, write_adapter
from trainer.trial_folder import CHECKPOINT_DIR

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"


def save_checkpoint(member: Member, weights: dict, base_name: str) -> Path:
    """Write ``member``'s state at its current step; older checkpoints of the trial are removed after."""
    folder = member.spec.out / CHECKPOINT_DIR / f"checkpoint-{member.step}"
    shutil.rmtree(folder, ignore_errors=True)
    checkpoints.claim(member.spec)
    write_adapter(member.spec, weights, base_name, folder)
    generator = member.generator.get_state() if member.generator is not None else None
    torch.save({"optimizer": member.optimizer.state_dict(), "scheduler": member.scheduler.state_dict(),
                "generator": generator}, folder / OPTIMIZER_FILE)
    state = {"global_step": member.step, "train_batch_size": member.spec.training.per_device_train_batch_size,
             "epoch": member.epoch, "evals": member.evals, "losses": member.losses,
             "train_tokens": member.train_tokens}
    (folder / STATE_FILE).write_text(json.dumps(state) + "\n")
    for old in folder.parent.glob("checkpoint-*"):
        if old != folder:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def find_checkpoint(member: Member) -> checkpoints.ResumePoint:
    """The newest complete checkpoint that this trial wrote (path and step), or step 0 and why not."""
    return checkpoints.resume_point(member.spec)


def restore_checkpoint(member: Member, weights: dict, folder: Path) -> None:
    """Load checkpoint ``folder`` into ``member`` (weights of its adapters as ``weights``); it goes on after."""
    from safetensors.torch import load_file

    saved = load_file(folder / WEIGHTS_FILE)
    with torch.no_grad():
        for name, (a, b) in weights.items():
            a.copy_(saved[f"base_model.model.{name}.lora_A.weight"])
            b.copy_(saved[f"base_model.model.{name}.lora_B.weight"])
    states = torch.load(folder / OPTIMIZER_FILE, weights_only=False)
    member.optimizer.load_state_dict(states["optimizer"])
    member.scheduler.load_state_dict(states["scheduler"])
    if states["generator"] is not None:
        member.generator.set_state(states["generator"])
    state = json.loads((folder / STATE_FILE).read_text())
    member.epoch, member.train_tokens = state["epoch"], state["train_tokens"]
    member.losses = [tuple(entry) for entry in state["losses"]]
    for step, loss in state["evals"]:
        member.record_eval(loss, step=step, restored=True)
    member.start_at(state["global_step"])
