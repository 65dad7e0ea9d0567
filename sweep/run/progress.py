"""The live view of a running sweep: a bar of the study's finished trials with the time elapsed and an
ETA, the counts and the best so far, and each running trial's step (or what it is loading), train
loss and ETA. On a terminal it redraws in place (rich); elsewhere (CI, a log file) it prints one
line per trial started and finished. Either way each trial ends with a line of its own, interrupted
ones (Ctrl-C) included.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from sweep.schema.objectives import Objectives

# what a trainer does after it reports the end of each start-up phase (trainer.events.Phase)
NEXT_PHASE = {"imports": "loading model", "model": "reading data", "data": "attaching LoRA",
              "lora": "building trainer", "trainer": "first step", "trained": "answering samples"}


@dataclass
class _Running:
    params: dict
    started: float = field(default_factory=time.time)
    step: int = 0
    total: int = 0
    step_started: float | None = None
    first_step: int = 0
    loss: float | None = None
    phase: str = "starting"

    def where(self) -> str:
        """The step, before the first one what the trainer is doing and for how long, after training what it does."""
        if self.phase == "training":
            return f"{self.step}/{self.total or '?'}"
        if self.step:
            return f"{self.step}/{self.total or '?'} {self.phase}"
        return f"{self.phase}... {time.time() - self.started:.0f}s"

    def eta(self) -> str:
        done = self.step - self.first_step
        if done <= 0 or not self.total or self.step_started is None:
            return "-"
        per_step = (time.time() - self.step_started) / done
        return clock(per_step * (self.total - self.step))


def clock(seconds: float) -> str:
    """``42s``, ``3:07`` or ``1:02:03``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def format_params(params: dict) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


class ProgressView:
    """Thread-safe; ``with ProgressView(...)`` shows it while the sweep runs."""

    def __init__(self, study_name: str, n_trials: int, counts: dict[str, int], best: float | None,
                 console: Console | None = None, objectives: Objectives | None = None) -> None:
        self.console = console or Console()
        self.objectives = objectives or Objectives()  # several metrics: no single best to show
        self.study_name = study_name
        self.n_trials = n_trials
        self.counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0, **counts}
        self.best = best
        self.running: dict[int, _Running] = {}
        self.started = time.time()
        self.finished_here = 0  # finished by this run: the pace of the ETA
        self._lock = threading.Lock()
        self._live = Live(console=self.console, refresh_per_second=4, get_renderable=self.render, transient=False) \
            if self.console.is_terminal else None

    def __enter__(self) -> ProgressView:
        if self._live:
            self._live.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._live:
            self._live.stop()

    def trial_started(self, number: int, params: dict, waiting: bool = False) -> None:
        """Trial ``number`` was handed to a trainer, which has not reported yet (``waiting``: to join a group)."""
        with self._lock:
            self.running[number] = _Running(params, phase="waiting in the group" if waiting else "starting")
        if not self._live:
            self.console.print(f"trial {number} started: {format_params(params)}", highlight=False, soft_wrap=True)

    def trial_phase(self, number: int, name: str) -> None:
        """The trial's trainer finished start-up phase ``name``."""
        with self._lock:
            run = self.running.get(number)
            if run is not None:
                run.phase = NEXT_PHASE.get(name, run.phase)

    def trial_step(self, number: int, step: int, total: int, loss: float | None = None) -> None:
        with self._lock:
            run = self.running.get(number)
            if run is None:
                return
            if run.step_started is None:
                run.step_started, run.first_step = time.time(), step
            run.step, run.total, run.phase = step, total, "training"
            if loss is not None:
                run.loss = loss

    def trial_interrupted(self, number: int) -> None:
        """The trial was stopped by Ctrl-C or SIGTERM; it is tried again when the study runs again."""
        with self._lock:
            run = self.running.pop(number, None)
        if run is not None:
            self.console.print(f"trial {number} INTERRUPTED at {run.where()} after {clock(time.time() - run.started)}",
                               highlight=False, soft_wrap=True)

    def trial_finished(self, number: int, state: str, value: float | list[float] | None,
                       reason: str | None = None) -> None:
        """A trial ended; ``value`` is its value, or its values for a study of several metrics."""
        with self._lock:
            run = self.running.pop(number, None)
            self.counts[state] = self.counts.get(state, 0) + 1
            self.finished_here += state in ("COMPLETE", "PRUNED")
            if value is not None and not self.objectives.multi and self.objectives.better(value, self.best):
                self.best = value
        took = f" in {time.time() - run.started:.0f}s" if run else ""
        shown = f" {self.objectives.format(value)}" if value is not None else ""
        why = f" ({reason})" if reason else ""
        self.console.print(f"trial {number} {state}{shown}{took}{why}", highlight=False, soft_wrap=True)

    def eta(self, finished: int) -> str:
        """Time to the study's total at this run's pace so far ("-" before its first finished trial)."""
        if not self.finished_here:
            return "-"
        left = max(0, self.n_trials - finished)
        return clock((time.time() - self.started) / self.finished_here * left)

    def render(self) -> Group:
        with self._lock:
            c = self.counts
            finished = c["COMPLETE"] + c["PRUNED"]
            best = ""
            if not self.objectives.multi:
                best = f"  best {self.objectives.labels[0]} " + (f"{self.best:.4f}" if self.best is not None else "-")
            bar = Table.grid(padding=(0, 1))
            bar.add_row(f"[bold]{self.study_name}[/]", ProgressBar(total=self.n_trials, completed=finished, width=30),
                        f"{finished}/{self.n_trials} trials", f"elapsed {clock(time.time() - self.started)}",
                        f"ETA {self.eta(finished)}")
            counts = (f"complete {c['COMPLETE']}  pruned {c['PRUNED']}  failed {c['FAIL']}  "
                      f"running {len(self.running)}{best}")
            table = Table(box=None, pad_edge=False)
            for column in ("trial", "step", "loss", "ETA", "params"):
                table.add_column(column)
            for number, run in sorted(self.running.items()):
                loss = f"{run.loss:.4f}" if run.loss is not None else "-"
                table.add_row(str(number), run.where(), loss, run.eta(), format_params(run.params))
        return Group(bar, counts, table)
