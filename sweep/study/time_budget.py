"""``search.timeout_hours``: the study's time budget, the time it has run summed over all its runs.

Each run (a ``python -m sweep run`` process, one of several workers perhaps) records on the study the
span it has been running, ``[start, last beat]``, and refreshes it with every heartbeat. The time
used is the length of the union of those spans: workers running side by side count once, and the
time between a stopped run and its resumption does not count. Once the budget is used up no new
trial starts, in any worker; trials already running finish. Resuming a study whose budget is used
up starts nothing; raise ``timeout_hours`` to go on.

    >>> used_seconds([(0, 100), (50, 160), (1000, 1010)])
    170.0
"""

from __future__ import annotations

import os
import socket
import time

from sweep.study.optuna_internals import set_system_attr, system_attrs

SPAN_PREFIX = "sweep:ran:"  # study system attr per run: [start, last beat] in seconds since the epoch


def used_seconds(spans) -> float:
    """The length of the union of ``(start, end)`` spans."""
    total, reach = 0.0, None
    for start, end in sorted(spans):
        if reach is None or start > reach:
            total += end - start
            reach = end
        elif end > reach:
            total += end - reach
            reach = end
    return float(total)


class TimeBudget:
    """The study's budget of ``hours``, shared by every run of the study through its storage."""

    def __init__(self, optuna_study, hours: float) -> None:
        self.study = optuna_study
        self.hours = hours
        self.start = time.time()
        self.key = f"{SPAN_PREFIX}{socket.gethostname()}:{os.getpid()}:{self.start:.3f}"

    def record(self) -> None:
        """Record this run's span up to now (on every heartbeat, and at the start and end of the run)."""
        set_system_attr(self.study, self.key, [self.start, time.time()])

    def used(self) -> float:
        """Seconds of the budget used, this run's time up to now included."""
        attrs = system_attrs(self.study)
        spans = [tuple(v) for k, v in attrs.items() if k.startswith(SPAN_PREFIX) and k != self.key]
        return used_seconds([*spans, (self.start, time.time())])

    def spent(self) -> bool:
        return self.used() >= self.hours * 3600

    def describe(self) -> str:
        return f"the study's time budget (search.timeout_hours: {self.hours:g}) is used up"


class NoTimeBudget:
    """No ``timeout_hours``: never spent, nothing recorded."""

    def record(self) -> None:
        pass

    def spent(self) -> bool:
        return False


def time_budget(optuna_study, hours: float | None) -> TimeBudget | NoTimeBudget:
    """The budget of ``search.timeout_hours`` (none when it is not set)."""
    return NoTimeBudget() if hours is None else TimeBudget(optuna_study, hours)
