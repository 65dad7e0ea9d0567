"""Fault injection for tests only: ``SWEEP_TEST_FAULT=KIND@STEP`` makes a trial misbehave at a step.

Kinds: ``crash`` (raises), ``hang`` (sleeps forever), ``oom`` (raises torch's out-of-memory error),
``oom_above_batch_N`` (out of memory only while the micro-batch is larger than N), ``kill`` (SIGKILLs
its own process). Nothing reads this variable unless a test sets it.
"""

from __future__ import annotations

import os
import signal
import time

from transformers import TrainerCallback

ENV = "SWEEP_TEST_FAULT"


class FaultCallback(TrainerCallback):
    def __init__(self, fault: str, micro_batch: int) -> None:
        kind, _, step = fault.partition("@")
        self.kind, self.step, self.micro_batch = kind, int(step or 1), micro_batch

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step != self.step:
            return
        import torch

        if self.kind == "crash":
            raise RuntimeError("injected crash (SWEEP_TEST_FAULT)")
        if self.kind == "hang":
            while True:
                time.sleep(3600)
        if self.kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.kind == "oom" or (
            self.kind.startswith("oom_above_batch_") and self.micro_batch > int(self.kind.rsplit("_", 1)[1])
        ):
            raise torch.OutOfMemoryError("CUDA out of memory (injected by SWEEP_TEST_FAULT)")


def fault_callbacks(micro_batch: int) -> list[FaultCallback]:
    fault = os.environ.get(ENV)
    return [FaultCallback(fault, micro_batch)] if fault else []
