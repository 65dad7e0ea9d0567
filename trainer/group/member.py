"""One trial inside a group: its adapter slot, optimizer, schedule, eval points, stop file and events.

Everything that makes a trial itself lives here, apart from the shared base and the shared forward:
its own AdamW (the Trainer's ``adamw_torch``: betas 0.9/0.999, eps 1e-8, the spec's weight decay),
its own learning-rate schedule with warm-up (``transformers.get_scheduler``, as the Trainer builds
it), its own gradient clipping (``max_grad_norm`` over its own parameters), its own eval points
(the same rule as :class:`trainer.callbacks.EventCallback`) and its own ``STOP`` file.
In a stacked group the group clips and steps every member's slot at once, and the member's
optimizer is a :class:`trainer.group.stacked_adamw.SlotOptimizer` that holds its hyperparameters
and state for its schedule and checkpoints.
"""

from __future__ import annotations

import math
import os
import signal
import time
from typing import NamedTuple

import torch

from trainer.events import Evaluation, EventWriter, Phase, Progress
from trainer.group.batches import MicroBatch, TrainOrder
from trainer.spec import GROUPED_OPTIMIZERS, TrialSpec
from trainer.trial_folder import STOP_FILE

OPTIMIZERS = GROUPED_OPTIMIZERS
STEADY_AFTER = 2  # steps left out of the throughput figure (allocator and kernel warm-up), as EventCallback


def warmup_steps(spec: TrialSpec, total_steps: int) -> int:
    """The Trainer's rule: ``warmup_ratio`` of the steps (rounded up) when set, else ``warmup_steps``."""
    t = spec.training
    return math.ceil(total_steps * t.warmup_ratio) if t.warmup_ratio else t.warmup_steps


def eval_points(spec: TrialSpec, total_steps: int) -> dict[int, int | None]:
    """Steps to evaluate at, each with its ordinal among the evenly spread points (None with ``eval_steps``)."""
    t = spec.training
    if t.eval_steps:
        return {s: None for s in range(t.eval_steps, total_steps + 1, t.eval_steps)} | {total_steps: None}
    n = min(t.eval_points, total_steps)
    return {max(1, round(k * total_steps / n)): k for k in range(1, n + 1)}


class WindowLoss(NamedTuple):
    """A member's loss summed over the micro-batches of its optimizer step: ``values[index]``, or
    ``values`` itself (a 0-d tensor) when ``index`` is None. Several members may share one ``values``."""

    values: torch.Tensor
    index: int | None


class DueLog:
    """A train-loss report due at ``step``: the windows it averages, and their values once copied to the host."""

    def __init__(self, step: int, epoch: float, learning_rate: float, windows: list[WindowLoss]) -> None:
        self.step, self.epoch, self.learning_rate, self.windows = step, epoch, learning_rate, windows
        self.staged: StagedLosses | None = None


class StagedLosses:
    """Loss tensors on their way to the host: on a GPU a copy into pinned memory queued behind the work queued so
    far, and an event after it, so reading them waits for that work only, not for steps queued since."""

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        flat = torch.cat([t.reshape(-1) for t in tensors])
        self.offsets, start = {}, 0
        for tensor in tensors:
            self.offsets[id(tensor)], start = start, start + tensor.numel()
        self.event = None
        if flat.is_cuda:
            self.host = torch.empty(flat.shape, dtype=flat.dtype, pin_memory=True)
            self.host.copy_(flat, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.host = flat
        self._values: list[float] | None = None

    def value(self, window: WindowLoss) -> float:
        if self._values is None:
            if self.event is not None:
                self.event.synchronize()
            self._values = self.host.tolist()
        return self._values[self.offsets[id(window.values)] + (window.index or 0)]


class Member:
    """A trial's training state next to the others'; the group trainer drives it one micro-batch at a time.

    Without ``optimizer`` it trains ``params`` with its own AdamW and clipping; with one (a stacked
    group's :class:`trainer.group.stacked_adamw.SlotOptimizer`, ``params`` empty) the group has
    already clipped and stepped its weights when :meth:`after_backward` sees its last micro-batch.
    """

    def __init__(self, spec: TrialSpec, slot: int, params: list[torch.nn.Parameter], order: TrainOrder,
                 eval_data: list, events: EventWriter, started: float, faults=(),
                 generator: torch.Generator | None = None, optimizer: torch.optim.Optimizer | None = None) -> None:
        from transformers import get_scheduler

        t = spec.training
        if t.optim not in OPTIMIZERS:
            raise ValueError(f"training.optim {t.optim!r}: the grouped backend trains with AdamW, one of {OPTIMIZERS}")
        self.spec, self.slot, self.params, self.order = spec, slot, params, order
        self.eval_data, self.events, self.started, self.faults = eval_data, events, started, list(faults)
        self.before_kill = lambda: None  # what an injected kill waits for (the group's checkpoint writes)
        self.generator = generator  # of its dropout masks (None without dropout)
        # 8-bit optimizers save memory on the base's scale, not on LoRA's: plain AdamW, as run_trial does on CPU
        self.optimizer = optimizer or torch.optim.AdamW(params, lr=t.learning_rate, betas=(0.9, 0.999), eps=1e-8,
                                                        weight_decay=t.weight_decay,
                                                        fused=t.optim == "adamw_torch_fused" or None)
        self.scheduler = get_scheduler(t.lr_scheduler_type, self.optimizer,
                                       num_warmup_steps=warmup_steps(spec, order.total_steps),
                                       num_training_steps=order.total_steps)
        self.points = eval_points(spec, order.total_steps)
        self.step = 0
        self.epoch = 0.0
        self.stopped = False
        self.evals: list[tuple[int, float]] = []
        self.losses: list[tuple[int, float]] = []
        self.train_tokens = 0
        self._batches = None
        self._window_loss: list[torch.Tensor] = []
        self._pending: list[WindowLoss] = []  # windows since the last report
        self.due_logs: list[DueLog] = []  # reports due, their losses not read yet
        self._steady: tuple[float, int] | None = None
        self._last_step_time: float | None = None

    @property
    def total_steps(self) -> int:
        return self.order.total_steps

    @property
    def finished(self) -> bool:
        return self.step >= self.total_steps

    def start_at(self, step: int) -> None:
        """Continue after optimizer step ``step`` (0: from the start)."""
        self.step = step
        self._batches = self.order.micro_batches(after_step=step)

    def next_batch(self) -> MicroBatch:
        if self._batches is None:
            self.start_at(0)
        batch = next(self._batches)
        self.train_tokens += batch.tokens
        return batch

    def after_backward(self, batch: MicroBatch, loss: torch.Tensor | WindowLoss | None) -> bool:
        """Account the micro-batch's loss; at the end of its window, step the optimizer. True when it stepped.

        ``loss`` is the micro-batch's loss, or in a stacked group the window's (a :class:`WindowLoss`
        with the window's last micro-batch, None before it).
        """
        if isinstance(loss, torch.Tensor):
            self._window_loss.append(loss)
        if not batch.last:
            return False
        if self.params:  # its own optimizer (in a stacked group the group clipped and stepped every slot)
            torch.nn.utils.clip_grad_norm_(self.params, self.spec.training.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step, self.epoch = batch.step, batch.epoch
        # the loss stays a tensor until it is logged (log_progress): reading it would wait for the GPU
        window = loss if isinstance(loss, WindowLoss) else WindowLoss(torch.stack(self._window_loss).sum(), None)
        self._pending.append(window)
        self._window_loss = []
        self._clock()
        self._inject_faults()  # before the report: as the Trainer, no log of a step that raised
        if self.step % self.spec.training.logging_steps == 0 or self.finished:
            self.due_logs.append(DueLog(self.step, self.epoch, self.scheduler.get_last_lr()[0], self._pending))
            self._pending = []
        return True

    def _log(self, due: DueLog) -> None:
        mean = sum(due.staged.value(w) for w in due.windows) / len(due.windows)
        self.losses.append((due.step, mean))
        self.events.emit(Progress(step=due.step, total_steps=self.total_steps, loss=mean,
                                  learning_rate=due.learning_rate, epoch=due.epoch))

    def _clock(self) -> None:
        now = time.time()
        if self._last_step_time is None:
            self.events.emit(Phase(name="first_step", seconds=now - self.started))
        if self._steady is None and self.step >= STEADY_AFTER:
            self._steady = (now, self.train_tokens)
        self._last_step_time = now

    @property
    def tokens_per_second(self) -> float | None:
        """Real tokens per second of this trial after its first steps (its share of the group's time)."""
        if self._steady is None or self._last_step_time is None or self._last_step_time <= self._steady[0]:
            return None
        return (self.train_tokens - self._steady[1]) / (self._last_step_time - self._steady[0])

    @property
    def eval_due(self) -> bool:
        return self.step in self.points and (not self.evals or self.evals[-1][0] != self.step)

    def record_eval(self, loss: float, step: int | None = None, restored: bool = False) -> None:
        """Note and report the eval loss at ``step`` (default: now); ``restored``: read back from a checkpoint."""
        step = self.step if step is None else step
        self.evals.append((step, loss))
        self.events.emit(Evaluation(step=step, total_steps=self.total_steps, eval_loss=loss,
                                    point=self.points.get(step), restored=restored))

    @property
    def stop_requested(self) -> bool:
        return (self.spec.out / STOP_FILE).exists()

    @property
    def mean_train_loss(self) -> float | None:
        """Mean of the logged losses, each weighted by the steps it covers (as ``run_trial.mean_train_loss``)."""
        total, last = 0.0, 0
        for step, loss in self.losses:
            total, last = total + loss * (step - last), step
        return total / last if last else None

    def _inject_faults(self) -> None:
        """``SWEEP_TEST_FAULT`` (tests only): misbehave at this trial's step, as ``trainer.faults`` does."""
        for fault in self.faults:
            if fault.step != self.step:
                continue
            if fault.kind == "crash":
                raise RuntimeError("injected crash (SWEEP_TEST_FAULT)")
            if fault.kind == "oom":
                raise torch.OutOfMemoryError("CUDA out of memory (injected by SWEEP_TEST_FAULT)")
            if fault.kind == "kill":
                self.before_kill()  # the checkpoints written so far land first: a test knows where it resumes
                os.kill(os.getpid(), signal.SIGKILL)
            if fault.kind == "hang":
                while True:
                    time.sleep(3600)


def stage_logs(members: list[Member]) -> None:
    """Start copying the losses of every report due in ``members`` to the host, in one copy queued behind the work
    queued so far (see :class:`StagedLosses`): a group stages its reports right after a step and reads them
    after queueing the next, so the GPU runs on while the host waits."""
    due = [d for m in members for d in m.due_logs if d.staged is None]
    if not due:
        return
    staged = StagedLosses(list({id(w.values): w.values for d in due for w in d.windows}.values()))
    for d in due:
        d.staged = staged


def log_progress(members: list[Member]) -> None:
    """Report every due train loss of ``members`` (in step order per member), reading their losses at once: those
    staged at an earlier step wait for that step only."""
    members = [m for m in members if m.due_logs]
    stage_logs(members)
    for member in members:
        for due in member.due_logs:
            member._log(due)
        member.due_logs = []
