"""The one helper module of the tests: where the project lies, study files to run, the real commands
in subprocesses, and checks on what a study's database and trial folders hold afterwards.

Every command runs as a user runs it (``python -m sweep ...``, ``python -m trainer SPEC``) from the
project root, with this checkout first on the path and one thread per process (several trainers share
the CI machine's two cores). A trial of :func:`write_study`'s studies trains the shipped tiny Llama for
``max_steps`` steps on a slice of the demo data: about 8 to 10 s on a CPU, most of it importing torch
and transformers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from sweep.errors import UserError
from sweep.schema.study_file import load_study
from trainer.env_contract import FAULT_ENV
from trainer.events import read_all
from trainer.trial_folder import CHECKPOINT_DIR, EVENTS_FILE

ROOT = Path(__file__).resolve().parents[2]
STUDIES = ROOT / "studies"
TINY_MODEL = STUDIES / "models" / "tiny-llama"
DEMO_DATA = STUDIES / "data" / "demo"

# the smallest valid study file, for tests of the schema: they edit its text to make it invalid
MINIMAL_STUDY = f"""
model:
  name_or_path: {TINY_MODEL}
  max_seq_length: 128
  load_in_4bit: false
  chat_template: llama-3
data:
  train: {DEMO_DATA / 'train.jsonl'}
  eval: {DEMO_DATA / 'eval.jsonl'}
search:
  n_trials: 2
  params:
    learning_rate: {{low: 1.0e-4, high: 1.0e-2, log: true}}
    r: {{choices: [4, 8]}}
"""


def demo_data_slice(folder: Path, train_rows: int, eval_rows: int) -> tuple[Path, Path]:
    """The first rows of the demo chat set, written to ``folder/data/{train,eval}.jsonl``."""
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    paths = []
    for split, rows in (("train", train_rows), ("eval", eval_rows)):
        lines = (DEMO_DATA / f"{split}.jsonl").read_text().splitlines()[:rows]
        paths.append(data / f"{split}.jsonl")
        paths[-1].write_text("\n".join(lines) + "\n")
    return paths[0], paths[1]


def write_study(folder: Path, name: str, n_trials: int, *, max_steps: int = 8, eval_points: int = 4,
                execution: dict | None = None, enqueue: list[dict] | None = None, samples: dict | None = None,
                objective: str | list[str] | None = None) -> Path:
    """A study file on the tiny model: ``max_steps`` steps a trial, evaluated (and checkpointed) at
    ``eval_points`` points, short heartbeats so a dead worker's trials are found within seconds;
    ``objective`` is ``search.objective`` (default: the file leaves it out)."""
    train, evaluation = demo_data_slice(folder, 96, 16)
    study = {
        "name": name,
        "model": {"name_or_path": str(TINY_MODEL), "max_seq_length": 128,
                  "load_in_4bit": False, "chat_template": "llama-3", "dtype": "float32"},
        "data": {"train": str(train), "eval": str(evaluation)},
        "training": {"per_device_train_batch_size": 8, "per_device_eval_batch_size": 16, "warmup_steps": 1,
                     "optim": "adamw_torch", "weight_decay": 0.0, "eval_points": eval_points,
                     "max_steps": max_steps},
        **({"samples": samples} if samples else {}),
        "search": {"n_trials": n_trials, **({"objective": objective} if objective else {}),
                   "params": {"learning_rate": {"low": 1e-3, "high": 5e-2, "log": True}, "num_train_epochs": 1,
                              "r": {"choices": [4, 8]}, "lora_alpha": 16, "use_rslora": False},
                   "sampler": {"name": "tpe", "seed": 7, "n_startup_trials": 10}, "pruner": {"name": "none"},
                   "enqueue": enqueue or [{"learning_rate": 2e-2, "r": 8}]},
        "execution": {"heartbeat_seconds": 1, "stale_after_seconds": 3, "max_retries": 5,
                      "max_consecutive_failures": 10, "timeout_minutes": 5, **(execution or {})},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def write_study_text(folder: Path, text: str, name: str = "s.yaml") -> Path:
    """A study file holding ``text`` (dedented)."""
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def study_errors(path: Path) -> list[str]:
    """The lines of the UserError that loading the study file ``path`` raises; each names the file."""
    with pytest.raises(UserError) as caught:
        load_study(str(path))
    lines = str(caught.value).splitlines()
    assert all(line.startswith(str(path)) for line in lines), lines
    return lines


def sweep_env(**extra: str) -> dict[str, str]:
    """The environment of every command a test runs, plus ``extra``; faults only where a test asks for them."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop(FAULT_ENV, None)
    return {**env, **extra}


def run_module(module: str, *args: str, timeout: float = 600, input: str | None = None,
               **env: str) -> subprocess.CompletedProcess:
    """``python -m MODULE ARGS`` to its end, as a user runs it; output captured as text."""
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env=sweep_env(**env), input=input,
                          stdin=subprocess.DEVNULL if input is None else None)


def sweep_cli(*args: str, timeout: float = 900, **env: str) -> subprocess.CompletedProcess:
    """``python -m sweep ARGS`` to its end."""
    return run_module("sweep", *args, timeout=timeout, **env)


def run_args(study_file: Path, runs_dir: Path, *extra: str) -> list[str]:
    """The arguments of ``sweep run`` on ``study_file`` with its runs under ``runs_dir``."""
    return ["run", "--study", str(study_file), "--runs-dir", str(runs_dir), *extra]


def run_sweep(study_file: Path, runs_dir: Path, *extra: str, timeout: float = 600, **env: str):
    """``python -m sweep run`` to its end; returns the CompletedProcess (output captured)."""
    return sweep_cli(*run_args(study_file, runs_dir, *extra), timeout=timeout, **env)


def start_sweep(study_file: Path, runs_dir: Path, *extra: str, log: Path | None = None, **env: str) -> subprocess.Popen:
    """``python -m sweep run`` in the background, its output appended to ``log``."""
    out = open(log or runs_dir.parent / f"{study_file.stem}.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "sweep", *run_args(study_file, runs_dir, *extra)], stdout=out,
                            stderr=subprocess.STDOUT, env=sweep_env(**env), cwd=ROOT)


def status_json(study: str, runs_dir: Path) -> list[dict]:
    """``python -m sweep status --json``: the study's trials as the command prints them."""
    done = sweep_cli("status", "--study", study, "--runs-dir", str(runs_dir), "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def run_trainer(spec_path: Path, expect: int = 0, **env: str) -> list[dict]:
    """``python -m trainer SPEC``, the trainer alone, after removing earlier events as the orchestrator
    does; checks its exit code and returns its events."""
    (spec_path.parent / EVENTS_FILE).unlink(missing_ok=True)
    done = run_module("trainer", str(spec_path), timeout=300, **env)
    assert done.returncode == expect, done.stdout + done.stderr
    return events(spec_path.parent)


def fake_nvidia_smi(folder: Path, rows: str) -> str:
    """A PATH whose nvidia-smi prints ``rows`` the way the real one answers the sweep's query."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\nprintf '{rows}'\n")
    script.chmod(0o755)
    return f"{folder}:/usr/bin:/bin"


def wait_for(condition, timeout: float, what: str, poll: float = 0.2):
    """Poll ``condition()`` until it returns something true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def checkpoint_saved(trial_dir: Path, step: int) -> bool:
    """Whether the trial folder holds a complete checkpoint of ``step``."""
    return (trial_dir / CHECKPOINT_DIR / f"checkpoint-{step}" / "trainer_state.json").is_file()


def events(trial_dir: Path) -> list[dict]:
    """The trial's complete events so far, as JSON objects (a line still being written is left out)."""
    return [event.model_dump() for event in read_all(trial_dir / EVENTS_FILE)]


def trainer_pids(runs_dir: Path) -> list[int]:
    """Live trainers working under ``runs_dir``: ``python -m trainer SPEC`` and warm ``python -m trainer.worker``s."""
    out = subprocess.run(["pgrep", "-f", "--", f"-m trainer.* {Path(runs_dir).resolve()}"], capture_output=True, text=True)
    return [int(pid) for pid in out.stdout.split()]


def assert_no_trainer_left(runs_dir: Path, within: float = 0) -> None:
    """No trainer works under ``runs_dir`` any more (the last one given up to ``within`` seconds to end)."""
    if within:
        wait_for(lambda: not trainer_pids(runs_dir), within, f"the trainers under {runs_dir} to end")
    assert not trainer_pids(runs_dir)


def kill(process: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to the process alone (not its trainers) and reap it."""
    process.send_signal(sig)
    process.wait(timeout=60)


def load_trials(name: str, storage: str) -> list[optuna.trial.FrozenTrial]:
    """The trials of study ``name`` in ``storage``."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def sqlite_url(runs_dir: Path, name: str) -> str:
    """The URL of a study's default SQLite storage under ``runs_dir``."""
    return f"sqlite:///{runs_dir.resolve() / name / 'study.db'}"


def study_trials(runs_dir: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    """The trials of study ``name`` (or a version of it, ``name@v2``) in its default storage under ``runs_dir``."""
    return load_trials(name, sqlite_url(runs_dir, name.split("@v")[0]))


def assert_study_finished_exactly(trials, n_trials: int) -> list[optuna.trial.FrozenTrial]:
    """Exactly ``n_trials`` COMPLETE, none left RUNNING or WAITING, numbers unique, and no two COMPLETE
    trials share a trial folder or a configuration; returns the COMPLETE trials."""
    states = [t.state for t in trials]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states, [t.state.name for t in trials]
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == n_trials, [(t.number, t.state.name, t.user_attrs.get("fail_reason")) for t in trials]
    folders = [t.user_attrs["trial_dir"] for t in complete]
    assert len(folders) == len(set(folders)), folders
    configs = [tuple(sorted(t.params.items())) for t in complete]
    assert len(configs) == len(set(configs)), configs
    return complete


def assert_adapters_load(complete) -> None:
    """Every COMPLETE trial's adapter loads onto the tiny base model with PEFT."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    for trial in complete:
        base = AutoModelForCausalLM.from_pretrained(TINY_MODEL)
        model = PeftModel.from_pretrained(base, trial.user_attrs["adapter_path"])
        assert model.peft_config["default"].r == trial.params["r"]
