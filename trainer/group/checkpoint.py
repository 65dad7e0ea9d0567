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

A group writes its checkpoints from a thread of its own (:class:`CheckpointWriter`): the step waits
only for a copy of the member's state on the CPU, not for the disk (a rank-128 SmolLM2 member's
adapter and AdamW moments are about 470 MB, every eval point of every member).
"""

from __future__ import annotations

import copy
import json
import queue
import shutil
import threading
import traceback
from pathlib import Path

import torch

from trainer import checkpoints
from trainer.group.member import Member
from trainer.group.peft_format import WEIGHTS_FILE, write_adapter
from trainer.group.slot_copy import SlotCopy
from trainer.trial_folder import CHECKPOINT_DIR

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"


def snapshot(member: Member, weights: dict | SlotCopy) -> dict:
    """Everything a checkpoint of ``member`` holds, copied to the CPU (training may go on while it is written);
    ``weights``: its adapter's ``{layer name: (A, B)}``, or its slot of a stack being copied (weights and moments)."""
    generator = member.generator.get_state() if member.generator is not None else None
    state = {"global_step": member.step, "train_batch_size": member.spec.training.per_device_train_batch_size,
             "epoch": member.epoch, "evals": list(member.evals), "losses": list(member.losses),
             "train_tokens": member.train_tokens}
    states = {"scheduler": copy.deepcopy(member.scheduler.state_dict()), "generator": generator}
    if isinstance(weights, SlotCopy):
        return {"spec": member.spec, "step": member.step, "state": state, "copied": weights, "states": states}
    return {"spec": member.spec, "step": member.step, "state": state,
            "weights": {name: (_copy(a), _copy(b)) for name, (a, b) in weights.items()},
            "states": {"optimizer": _cpu(member.optimizer.state_dict()), **states}}


def write_snapshot(saved: dict, base_name: str) -> Path:
    """Write a :func:`snapshot` as the trial's newest checkpoint (``trainer_state.json`` last), then remove the older."""
    spec = saved["spec"]
    folder = spec.out / CHECKPOINT_DIR / f"checkpoint-{saved['step']}"
    shutil.rmtree(folder, ignore_errors=True)
    checkpoints.claim(spec)
    copied = saved.get("copied")
    weights = saved["weights"] if copied is None else copied.weights()
    states = saved["states"] if copied is None else {"optimizer": copied.optimizer_state(), **saved["states"]}
    write_adapter(spec, weights, base_name, folder)
    torch.save(states, folder / OPTIMIZER_FILE)
    (folder / STATE_FILE).write_text(json.dumps(saved["state"]) + "\n")
    for old in folder.parent.glob("checkpoint-*"):
        if old != folder:
            shutil.rmtree(old, ignore_errors=True)
    return folder


class CheckpointWriter:
    """Checkpoints written in order by one thread of their own.

    :meth:`settle` waits until the checkpoints queued for a trial folder (or for all) are on disk;
    :meth:`failed` hands over, without waiting, the error of each trial folder whose checkpoint could
    not be written.
    """

    def __init__(self) -> None:
        self._jobs: queue.Queue = queue.Queue()
        self._done = threading.Condition()
        self._pending: dict[Path, int] = {}
        self._errors: dict[Path, Exception] = {}
        threading.Thread(target=self._write, name="checkpoints", daemon=True).start()

    def save(self, member: Member, weights: dict, base_name: str) -> None:
        self.put(snapshot(member, weights), base_name)

    def put(self, saved: dict, base_name: str) -> None:
        """Write a :func:`snapshot` taken earlier (its evaluations completed since: ``saved["state"]["evals"]``)."""
        out = saved["spec"].out
        with self._done:
            self._pending[out] = self._pending.get(out, 0) + 1
        self._jobs.put((saved, base_name))

    def settle(self, out: Path | None = None) -> None:
        with self._done:
            self._done.wait_for(lambda: not self._pending.get(out) if out is not None else not self._pending)

    def failed(self) -> dict[Path, Exception]:
        with self._done:
            errors, self._errors = self._errors, {}
        return errors

    def _write(self) -> None:
        while True:
            saved, base_name = self._jobs.get()
            out = saved["spec"].out
            try:
                write_snapshot(saved, base_name)
            except Exception as error:
                traceback.print_exc()
                with self._done:
                    self._errors[out] = error
            with self._done:
                self._pending[out] -= 1
                if not self._pending[out]:
                    del self._pending[out]
                self._done.notify_all()


def _copy(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu", copy=True)


def _cpu(value):
    """``value`` (a state dict) with every tensor copied to the CPU."""
    if isinstance(value, torch.Tensor):
        return _copy(value)
    if isinstance(value, dict):
        return {key: _cpu(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_cpu(item) for item in value)
    return value


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
