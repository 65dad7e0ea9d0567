"""bench/checkpoint_write.py on the CPU: a stacked member's checkpoint written alone and beside a busy thread."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.sweep.live_study import ROOT


def test_checkpoint_write_times_a_whole_checkpoint_of_one_member():
    done = subprocess.run([sys.executable, "bench/checkpoint_write.py", "--layers", "1", "--rank", "4", "--repeats", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(done.stdout)
    owned = 4 * (576 * 2 + (576 + 192) * 2 + (576 + 1536) * 3)  # one layer of SmolLM2's seven projections at rank 4
    assert figures["bytes"] >= 3 * 4 * owned  # the adapter and both AdamW moments, in float32
    assert figures["ms_alone"] > 0 and figures["ms_beside_busy_thread"] > 0
