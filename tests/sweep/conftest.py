"""Fixtures shared by the sweep tests: a PostgreSQL server, and a small real study run once per session."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.sweep.live_study import ROOT

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEMO = PROJECT_ROOT / "studies" / "demo.yaml"
PG_URL_ENV = "SWEEP_TEST_PG_URL"


@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL server's URL: ``SWEEP_TEST_PG_URL`` (CI starts one, see .ci/run), else a server this
    session starts with ``.ci/postgres``; skipped only where no PostgreSQL server binary exists."""
    if os.environ.get(PG_URL_ENV):
        yield os.environ[PG_URL_ENV]
        return
    if not (glob.glob("/usr/lib/postgresql/*/bin/postgres") or shutil.which("postgres")):
        pytest.skip(f"no PostgreSQL server binary: install Debian's postgresql package, or set {PG_URL_ENV}")
    data = tempfile.mkdtemp(prefix="lora-sweep-pg-")
    with socket.socket() as s:  # a free port on loopback
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = ROOT / ".ci" / "postgres"
    url = subprocess.run([script, "start", data, str(port)], capture_output=True, text=True, check=True).stdout.strip()
    yield url
    subprocess.run([script, "stop", data], check=False)
    shutil.rmtree(data, ignore_errors=True)



@dataclass
class FinishedStudy:
    """A study that ran to the end: its file, its runs folder and its name."""

    path: Path
    runs_dir: Path
    name: str

    @property
    def folder(self) -> Path:
        return self.runs_dir / self.name

    @property
    def storage(self) -> str:
        return f"sqlite:///{self.folder / 'study.db'}"

    def args(self) -> list[str]:
        """The ``--study``/``--runs-dir`` arguments every sweep command takes."""
        return ["--study", str(self.path), "--runs-dir", str(self.runs_dir)]


def write_tiny_study(folder: Path, name: str, n_trials: int = 2, max_steps: int = 8) -> Path:
    """The demo study, cut down to ``n_trials`` trials of ``max_steps`` steps, written to ``folder/NAME.yaml``."""
    raw = yaml.safe_load(DEMO.read_text())
    raw["name"] = name
    raw["model"]["name_or_path"] = str(DEMO.parent / raw["model"]["name_or_path"])
    for key in ("train", "eval"):
        raw["data"][key] = str(DEMO.parent / raw["data"][key])
    raw["training"]["max_steps"] = max_steps
    raw["training"]["eval_points"] = 2
    raw["search"]["n_trials"] = n_trials
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run_sweep(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m sweep ARGS`` as a user runs it; output captured as text."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run([sys.executable, "-m", "sweep", *args], capture_output=True, text=True, env=env,
                          cwd=PROJECT_ROOT, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def sweep_cli():
    """``sweep_cli(*args)`` runs ``python -m sweep ARGS`` and returns the completed process."""
    return run_sweep


@pytest.fixture(scope="session")
def tiny_study_file():
    """``tiny_study_file(folder, name, n_trials=2, max_steps=8)`` writes a cut-down demo study file."""
    return write_tiny_study


@pytest.fixture(scope="session")
def finished_study(tmp_path_factory) -> FinishedStudy:
    """Two real trials of the tiny demo model, 8 steps each, run by ``python -m sweep run`` (about a minute)."""
    folder = tmp_path_factory.mktemp("finished-study")
    path = write_tiny_study(folder, "results-tiny")
    study = FinishedStudy(path=path, runs_dir=folder / "runs", name="results-tiny")
    done = run_sweep("run", *study.args())
    assert done.returncode == 0, done.stdout + done.stderr
    return study


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def chromium(tmp_path):
    """``chromium(url, *action)``: headless Debian Chromium, a fresh profile per call; skips when absent.

    The page's scripts run for ``wait_ms`` of virtual time before ``action`` (``--dump-dom`` returns the
    DOM as text; ``--screenshot=PATH`` writes a PNG).
    """
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium package (.ci/run does)")
    calls = []

    def run(url: str, *action: str, wait_ms: int = 15000) -> str:
        calls.append(url)
        profile = tmp_path / f"chromium-profile-{len(calls)}"
        done = subprocess.run(
            [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={wait_ms}",
             *action, url], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    return run
