"""Where a group's time went: training steps, evaluations, departures, sample answers, joins, and waiting.

    ledger = Ledger()
    with ledger.timing("train"):
        ...
    ledger.count(steps=1, member_steps=12, tokens=9_000)
    print(ledger.line())   # group: 1,234 steps of 31.4 trials on average, ... train 81%, evaluate 9%, ...

Times are the host's wall clock. On a GPU a step's kernels run on after the host has queued them, so
their time lands where the host next waits for them (the next step's reads of the losses, an
evaluation's results): the shares say where the host waited, which is what a whole sweep pays.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

ACTIVITIES = ("train", "evaluate", "finish", "samples", "join")  # in the order a summary lists them


class Ledger:
    """Seconds per activity and counts (steps, member-steps, tokens, sampled trials, sample batches) since creation."""

    def __init__(self) -> None:
        self.began = time.perf_counter()
        self.seconds: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    @contextmanager
    def timing(self, activity: str):
        began = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[activity] += time.perf_counter() - began

    def count(self, **counts: int) -> None:
        for name, value in counts.items():
            self.counts[name] += value

    def set(self, **values: int) -> None:
        """Counts kept elsewhere, as they are now (a trainer's CUDA graph captures and replays)."""
        self.counts.update(values)

    def summary(self) -> dict:
        """Wall seconds, each activity's seconds (``idle``: none of them), the counts, and tokens per second."""
        wall = time.perf_counter() - self.began
        seconds = {name: round(self.seconds.get(name, 0.0), 3) for name in ACTIVITIES}
        seconds["idle"] = round(max(0.0, wall - sum(self.seconds.values())), 3)
        steps = self.counts.get("steps", 0)
        return {"wall_s": round(wall, 3), "seconds": seconds, **dict(self.counts),
                "mean_members": round(self.counts.get("member_steps", 0) / steps, 2) if steps else 0.0,
                "tokens_per_s": round(self.counts.get("tokens", 0) / wall, 1) if wall else 0.0}

    def line(self) -> str:
        """One line for the worker's log."""
        s = self.summary()
        wall = s["wall_s"] or 1.0
        shares = ", ".join(f"{name} {100 * value / wall:.0f}%" for name, value in s["seconds"].items())
        sampled = f" ({s.get('sampled', 0)} trials' samples in {s.get('sample_batches', 0)} batches)" \
            if s.get("sampled") else ""
        return (f"group: {s.get('steps', 0):,} steps of {s['mean_members']} trials on average, "
                f"{s.get('tokens', 0):,} tokens in {s['wall_s']:.1f} s ({s['tokens_per_s']:,.0f} tokens/s); "
                f"time: {shares}{sampled}")

    def write(self, path: Path) -> None:
        """The summary as JSON (``bench/sweep_throughput.py`` reads it from the worker's folder)."""
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.summary(), indent=1) + "\n")
        tmp.replace(path)
