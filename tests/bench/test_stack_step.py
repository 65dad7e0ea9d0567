"""bench/stack_step.py on the CPU: the work number by number of a stack of mixed ranks, timed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.sweep.live_study import ROOT

SMALL = ["--device", "cpu", "--layers", "1", "--hidden", "16", "--intermediate", "32", "--kv", "8",
         "--steps", "3", "--warmup", "1"]


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "bench/stack_step.py", *SMALL, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_stack_step_times_members_of_mixed_ranks_at_their_own_ranks():
    done = bench("--slots", "4", "--ranks", "4,8")
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(done.stdout)
    unit = 16 + 16 + 16 + 8 + 16 + 8 + 16 + 16 + 16 + 32 + 16 + 32 + 32 + 16  # in + out of the seven projections
    assert figures["owned_numbers"] == (4 + 8 + 4 + 8) * unit and figures["row_numbers"] == 4 * 8 * unit
    assert figures["ms_per_step"] > 0 and figures["device"] == "cpu"


def test_stack_step_refuses_a_window_with_no_steps():
    done = bench("--steps", "1", "--warmup", "1")
    assert done.returncode == 2 and "must be more than --warmup" in done.stderr
