"""Shared fixtures: the real CLI in a subprocess, and the shipped demo study run once per session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STUDIES = ROOT / "studies"
TINY_MODEL = STUDIES / "models" / "tiny-llama"
DEMO_DATA = STUDIES / "data" / "demo"


def sweep_cli(*args: str, cwd: Path | None = None, timeout: float = 900, env: dict | None = None):
    """Run ``python -m sweep ARGS`` for real; returns the CompletedProcess (text)."""
    return subprocess.run(
        [sys.executable, "-m", "sweep", *args], cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def status_json(study: str, runs_dir: Path) -> list[dict]:
    done = sweep_cli("status", "--study", study, "--runs-dir", str(runs_dir), "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """The shipped demo study, run once through the real CLI; returns its runs dir."""
    runs = tmp_path_factory.mktemp("demo-runs")
    done = sweep_cli("run", "--study", "demo", "--runs-dir", str(runs))
    assert done.returncode == 0, done.stdout + done.stderr
    return runs
