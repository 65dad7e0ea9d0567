"""The orchestrator never imports the training stack; it reaches the trainer only through a subprocess."""

from __future__ import annotations

import subprocess
import sys

from tests.sweep.live_study import ROOT

HEAVY = ("torch", "transformers", "peft", "trl", "unsloth", "datasets", "bitsandbytes")


def test_sweep_modules_import_no_training_stack():
    code = (
        "import pkgutil, importlib, sys, sweep, sweep.commands\n"
        "for m in pkgutil.walk_packages(sweep.__path__, 'sweep.'): importlib.import_module(m.name)\n"
        f"print([h for h in {HEAVY!r} if h in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "sweep", "--help"], cwd=ROOT, capture_output=True, text=True, check=True)
    for command in ("run", "status", "best"):
        assert command in out.stdout
