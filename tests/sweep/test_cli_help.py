"""The command line itself: --version, -v on either side of the command, help in plain text, and the
program named as it was called (``lora-sweep`` installed, ``python -m sweep`` from a checkout)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sweep import __version__
from sweep.cli import COMMANDS
from tests.sweep.live_study import ROOT, sweep_cli

NAMES = [command.__name__.rsplit(".", 1)[1] for command in COMMANDS]


def test_version():
    done = sweep_cli("--version")
    assert (done.returncode, done.stdout) == (0, f"python -m sweep {__version__}\n")
    assert 'version = { attr = "sweep.__version__" }' in (ROOT / "pyproject.toml").read_text()  # one home


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_before_or_after_the_command_shows_the_traceback(where):
    args = ["-v", "status", "--study", "no-such-study"] if where == "before" else ["status", "--study", "no-such-study", "-v"]
    done = sweep_cli(*args)
    assert done.returncode == 1 and "Traceback" in done.stderr and "UserError: no-such-study" in done.stderr
    quiet = sweep_cli("status", "--study", "no-such-study")
    assert quiet.returncode == 2 and quiet.stderr.startswith("error: no-such-study: no study of that name")


@pytest.mark.parametrize("command", [None, *NAMES])
def test_help_is_plain_text(command):
    done = sweep_cli(*([command] if command else []), "--help")
    assert done.returncode == 0, done.stderr
    assert "``" not in done.stdout and "::" not in done.stdout and ":class:" not in done.stdout, done.stdout
    assert done.stdout.startswith(f"usage: python -m sweep{' ' + command if command else ''} ")


def test_the_installed_script_calls_itself_lora_sweep(tmp_path):
    script = tmp_path / "lora-sweep"  # what pip writes for [project.scripts]
    script.write_text(f"#!{sys.executable}\nimport sys\nfrom sweep.cli import main\nsys.exit(main())\n")
    script.chmod(0o755)
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([str(script), "run", "--help"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("usage: lora-sweep run "), done.stdout + done.stderr
    top = subprocess.run([str(script), "--help"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert "lora-sweep status --study demo --json" in top.stdout and "python -m sweep" not in top.stdout
    bad = subprocess.run([str(script), "--bogus"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("usage: lora-sweep ")
