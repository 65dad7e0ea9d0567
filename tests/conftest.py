"""Shared fixtures: the shipped demo study run once per session (helpers: tests/sweep/live_study.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sweep.live_study import sweep_cli


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """The shipped demo study, run once through the real CLI; returns its runs dir."""
    runs = tmp_path_factory.mktemp("demo-runs")
    done = sweep_cli("run", "--study", "demo", "--runs-dir", str(runs), timeout=1800)  # 6 trials on a busy CPU
    assert done.returncode == 0, done.stdout + done.stderr
    return runs
