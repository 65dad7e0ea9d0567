"""The live view of a running sweep: trials done, running, pruned and failed, the best so far, and
each running trial's step with an ETA. On a terminal it redraws in place (rich); elsewhere (CI,
a log file) it prints one line per finished trial.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table


@dataclass
class _Running:
    params: dict
    started: float = field(default_factory=time.time)
    step: int = 0
    total: int = 0
    step_started: float | None = None
    first_step: int = 0

    def eta(self) -> str:
        done = self.step - self.first_step
        if done <= 0 or not self.total or self.step_started is None:
            return "-"
        per_step = (time.time() - self.step_started) / done
        return f"{per_step * (self.total - self.step):.0f}s"


def format_params(params: dict) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


class ProgressView:
    """Thread-safe; ``with ProgressView(...)`` shows it while the sweep runs."""

    def __init__(self, study_name: str, n_trials: int, counts: dict[str, int], best: float | None,
                 console: Console | None = None) -> None:
        self.console = console or Console()
        self.study_name = study_name
        self.n_trials = n_trials
        self.counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0, **counts}
        self.best = best
        self.running: dict[int, _Running] = {}
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

    def trial_started(self, number: int, params: dict) -> None:
        with self._lock:
            self.running[number] = _Running(params)
        if not self._live:
            self.console.print(f"trial {number} started: {format_params(params)}", highlight=False, soft_wrap=True)

    def trial_step(self, number: int, step: int, total: int) -> None:
        with self._lock:
            run = self.running.get(number)
            if run is None:
                return
            if run.step_started is None:
                run.step_started, run.first_step = time.time(), step
            run.step, run.total = step, total

    def trial_finished(self, number: int, state: str, value: float | None, reason: str | None = None) -> None:
        with self._lock:
            run = self.running.pop(number, None)
            self.counts[state] = self.counts.get(state, 0) + 1
            if value is not None and (self.best is None or value < self.best):
                self.best = value
        took = f" in {time.time() - run.started:.0f}s" if run else ""
        shown = f" eval_loss={value:.4f}" if value is not None else ""
        why = f" ({reason})" if reason else ""
        self.console.print(f"trial {number} {state}{shown}{took}{why}", highlight=False, soft_wrap=True)

    def render(self) -> Group:
        with self._lock:
            c = self.counts
            best = f"{self.best:.4f}" if self.best is not None else "-"
            head = (f"[bold]{self.study_name}[/]  finished {c['COMPLETE'] + c['PRUNED']}/{self.n_trials}  "
                    f"complete {c['COMPLETE']}  pruned {c['PRUNED']}  failed {c['FAIL']}  "
                    f"running {len(self.running)}  best eval_loss {best}")
            table = Table(box=None, pad_edge=False)
            for column in ("trial", "step", "ETA", "params"):
                table.add_column(column)
            for number, run in sorted(self.running.items()):
                table.add_row(str(number), f"{run.step}/{run.total or '?'}", run.eta(), format_params(run.params))
        return Group(head, table)
