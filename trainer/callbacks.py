"""The TrainerCallback that turns training into events and obeys the orchestrator's stop request."""

from __future__ import annotations

import time
from pathlib import Path

from transformers import TrainerCallback

from trainer.events import Evaluation, EventWriter, Phase, Progress
from trainer.trial_folder import STOP_FILE

WARMUP_STEPS_EXCLUDED = 2


class EventCallback(TrainerCallback):
    """Emits progress and eval events; stops training when the orchestrator creates ``STOP``.

    With ``eval_points`` it evaluates and checkpoints at that many evenly spread steps of the
    trial (the last one included, though not checkpointed), so trials of any length are compared
    at the same fractions.

    Also measures steady-state throughput: tokens per optimizer step over the time of the steps after
    the first ``WARMUP_STEPS_EXCLUDED`` (which pay for compilation and allocator warm-up).
    """

    def __init__(
        self, events: EventWriter, out_dir: Path, tokens_per_step: float, started: float, eval_points: int | None
    ) -> None:
        self.events = events
        self.eval_points = eval_points
        self.points: dict[int, int] = {}
        self.stop_file = Path(out_dir) / STOP_FILE
        self.tokens_per_step = tokens_per_step
        self.started = started
        self.stopped = False
        self.last_eval: tuple[int, float] | None = None
        self._first_step_seen = False
        self._steady_start: float | None = None
        self._steady_steps = 0

    def on_step_end(self, args, state, control, **kwargs):
        now = time.time()
        if not self._first_step_seen:
            self._first_step_seen = True
            self.events.emit(Phase(name="first_step", seconds=now - self.started))
        if self._steady_start is None and state.global_step >= WARMUP_STEPS_EXCLUDED:
            self._steady_start = now
            self._steady_step0 = state.global_step
        elif self._steady_start is not None:
            self._steady_steps = state.global_step - self._steady_step0
            self._steady_end = now
        self.on_step_end_schedule(state, control)
        if self.stop_file.exists():
            self.stopped = True
            control.should_training_stop = True
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            self.events.emit(
                Progress(
                    step=state.global_step, total_steps=state.max_steps, loss=logs["loss"],
                    learning_rate=logs.get("learning_rate"), epoch=logs.get("epoch"),
                )
            )

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and "eval_loss" in metrics:
            self.last_eval = (state.global_step, metrics["eval_loss"])
            self.events.emit(Evaluation(step=state.global_step, total_steps=state.max_steps,
                                        eval_loss=metrics["eval_loss"], point=self.points.get(state.global_step)))

    def on_train_begin(self, args, state, control, **kwargs):
        if self.eval_points:
            n = min(self.eval_points, state.max_steps)
            self.points = {max(1, round(k * state.max_steps / n)): k for k in range(1, n + 1)}
        # resumed from a checkpoint: its log history holds the evaluations made before the interruption
        for entry in state.log_history:
            if "eval_loss" in entry:
                self.last_eval = (entry["step"], entry["eval_loss"])
                self.events.emit(Evaluation(step=entry["step"], total_steps=state.max_steps, eval_loss=entry["eval_loss"],
                                            point=self.points.get(entry["step"]), restored=True))

    def on_step_end_schedule(self, state, control) -> None:
        if state.global_step in self.points:
            control.should_evaluate = True
            control.should_save = True
        if state.global_step >= state.max_steps:
            # no checkpoint of the last step: the adapter is saved right after it, and a Trainer
            # resumed from a checkpoint at max_steps trains one step past it (the loop tests the
            # step count only after a step), so a retry would record a loss no uninterrupted run has
            control.should_save = False

    @property
    def tokens_per_second(self) -> float | None:
        if not self._steady_steps:
            return None
        return self._steady_steps * self.tokens_per_step / (self._steady_end - self._steady_start)
