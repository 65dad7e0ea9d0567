"""``python -m trainer.merge``: what it says when it is not given a trial's adapter folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_merge_of_a_folder_that_is_no_adapter_is_a_one_line_error(tmp_path):
    (tmp_path / "adapter").mkdir()
    done = subprocess.run([sys.executable, "-m", "trainer.merge", str(tmp_path / "adapter"), str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"error: {tmp_path / 'adapter'}: not a trial's adapter folder "
                                        "(needs adapter_config.json, adapter_model.safetensors and trial_spec.json)"]
    assert not (tmp_path / "out").exists()
