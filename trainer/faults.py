"""Fault injection for tests only: ``SWEEP_TEST_FAULT`` makes trials misbehave at a given step.

The value is a comma-separated list of ``KIND@STEP``, each optionally limited to one trial with
``:trial=N``; for example ``crash@2:trial=0,hang@3:trial=2,oom@2``. Kinds:

- ``crash``: raises an exception;
- ``hang``: sleeps forever (the orchestrator's per-trial time limit must end it);
- ``kill``: SIGKILLs its own process;
- ``oom``: raises torch's out-of-memory error;
- ``oom_above_batch_B``: out of memory only while the micro-batch is larger than B;
- ``oom_if_shared``: out of memory only while other trials share its device (the orchestrator
  tells the trainer how many trials were placed on its device, ``SWEEP_TRIALS_ON_DEVICE``).

Nothing reads this variable unless a test sets it.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

from transformers import TrainerCallback

from trainer.env_contract import FAULT_ENV, TRIALS_ON_DEVICE_ENV


@dataclass(frozen=True)
class Fault:
    """One entry of ``SWEEP_TEST_FAULT``."""

    kind: str
    step: int
    trial: int | None = None


def parse_faults(text: str) -> list[Fault]:
    """The entries of a ``SWEEP_TEST_FAULT`` value; a malformed one raises ValueError (a broken test)."""
    faults = []
    for entry in filter(None, (e.strip() for e in text.split(","))):
        head, _, selector = entry.partition(":")
        kind, _, step = head.partition("@")
        trial = None
        if selector:
            key, _, value = selector.partition("=")
            if key != "trial" or not value.isdigit():
                raise ValueError(f"{FAULT_ENV}: {entry!r}: the selector must be ':trial=N'")
            trial = int(value)
        faults.append(Fault(kind, int(step or 1), trial))
    return faults


class FaultCallback(TrainerCallback):
    def __init__(self, fault: Fault, micro_batch: int) -> None:
        self.fault, self.micro_batch = fault, micro_batch

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step != self.fault.step:
            return
        import torch

        kind = self.fault.kind
        if kind == "crash":
            raise RuntimeError(f"injected crash ({FAULT_ENV})")
        if kind == "hang":
            while True:
                time.sleep(3600)
        if kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        shared = int(os.environ.get(TRIALS_ON_DEVICE_ENV, "1")) > 1
        if (kind == "oom" or (kind == "oom_if_shared" and shared)
                or (kind.startswith("oom_above_batch_") and self.micro_batch > int(kind.rsplit("_", 1)[1]))):
            raise torch.OutOfMemoryError(f"CUDA out of memory (injected by {FAULT_ENV})")


def fault_callbacks(micro_batch: int, trial_number: int) -> list[FaultCallback]:
    """The callbacks for the faults that ``SWEEP_TEST_FAULT`` aims at this trial (none when unset)."""
    faults = parse_faults(os.environ.get(FAULT_ENV, ""))
    return [FaultCallback(f, micro_batch) for f in faults if f.trial in (None, trial_number)]
