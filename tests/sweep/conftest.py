"""Fixtures shared by the sweep tests: a PostgreSQL server, a small real study run once per session, Chromium."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.sweep.live_study import ROOT, run_sweep, sqlite_url, write_study

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
        return sqlite_url(self.runs_dir, self.name)

    def args(self) -> list[str]:
        """The ``--study``/``--runs-dir`` arguments every sweep command takes."""
        return ["--study", str(self.path), "--runs-dir", str(self.runs_dir)]


@pytest.fixture(scope="session")
def finished_study(tmp_path_factory) -> FinishedStudy:
    """Two real trials of the tiny model, 8 steps each with two sample generations, run by
    ``python -m sweep run`` (about a minute)."""
    folder = tmp_path_factory.mktemp("finished-study")
    path = write_study(folder, "results-tiny", 2, eval_points=2, samples={"count": 2, "max_new_tokens": 24})
    study = FinishedStudy(path=path, runs_dir=folder / "runs", name="results-tiny")
    done = run_sweep(path, study.runs_dir)
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
