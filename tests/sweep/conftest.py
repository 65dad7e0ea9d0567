"""Fixtures shared by the sweep tests."""

from __future__ import annotations

import glob
import shutil
import socket
import subprocess
import tempfile

import pytest

from tests.sweep.live_study import ROOT

PG_URL_ENV = "SWEEP_TEST_PG_URL"


@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL server's URL: ``SWEEP_TEST_PG_URL`` (CI starts one, see .ci/run), else a server this
    session starts with ``.ci/postgres``; skipped only where no PostgreSQL server binary exists."""
    import os

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
