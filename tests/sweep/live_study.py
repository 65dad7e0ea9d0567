"""Helpers for tests that run real studies: small study files on the tiny model, the real CLI in
subprocesses, and checks on what the study database and the trial folders hold afterwards.

A trial of these studies trains the shipped tiny Llama for ``max_steps`` steps on a slice of the
demo data: about 8 to 10 s on a CPU, most of it importing torch and transformers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

from trainer.env_contract import FAULT_ENV
from trainer.trial_folder import CHECKPOINT_DIR, EVENTS_FILE

ROOT = Path(__file__).resolve().parents[2]
DEMO_DATA = ROOT / "studies" / "data" / "demo"


def write_study(folder: Path, name: str, n_trials: int, *, max_steps: int = 8, eval_points: int = 4,
                execution: dict | None = None, enqueue: list[dict] | None = None) -> Path:
    """A study file on the tiny model: ``max_steps`` steps a trial, evaluated (and checkpointed) at
    ``eval_points`` points, short heartbeats so a dead worker's trials are found within seconds."""
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", 96), ("eval", 16)):
        lines = (DEMO_DATA / f"{split}.jsonl").read_text().splitlines()[:rows]
        (data / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    study = {
        "name": name,
        "model": {"name_or_path": str(ROOT / "studies" / "models" / "tiny-llama"), "max_seq_length": 128,
                  "load_in_4bit": False, "chat_template": "llama-3", "dtype": "float32"},
        "data": {"train": str(data / "train.jsonl"), "eval": str(data / "eval.jsonl")},
        "training": {"per_device_train_batch_size": 8, "per_device_eval_batch_size": 16, "warmup_steps": 1,
                     "optim": "adamw_torch", "weight_decay": 0.0, "eval_points": eval_points,
                     "max_steps": max_steps},
        "search": {"n_trials": n_trials,
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


def sweep_env(**extra: str) -> dict[str, str]:
    """The environment of a sweep subprocess: this checkout first on the path, one thread per trainer
    (several trainers share the CI machine's two cores)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop(FAULT_ENV, None)  # faults only where a test asks for them
    return {**env, **extra}


def sweep_command(study_file: Path, runs_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sweep", "run", "--study", str(study_file), "--runs-dir", str(runs_dir), *extra]


def start_sweep(study_file: Path, runs_dir: Path, *extra: str, log: Path | None = None, **env: str) -> subprocess.Popen:
    """``python -m sweep run`` in the background, its output appended to ``log``."""
    out = open(log or runs_dir.parent / f"{study_file.stem}.log", "ab")
    return subprocess.Popen(sweep_command(study_file, runs_dir, *extra), stdout=out, stderr=subprocess.STDOUT,
                            env=sweep_env(**env), cwd=ROOT)


def run_sweep(study_file: Path, runs_dir: Path, *extra: str, timeout: float = 600, **env: str):
    """``python -m sweep run`` to its end; returns the CompletedProcess (output captured)."""
    return subprocess.run(sweep_command(study_file, runs_dir, *extra), capture_output=True, text=True,
                          env=sweep_env(**env), cwd=ROOT, timeout=timeout)


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
    path = trial_dir / EVENTS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip().endswith("}")]


def trainer_pids(runs_dir: Path) -> list[int]:
    """Live trainers working under ``runs_dir``: ``python -m trainer SPEC`` and warm ``python -m trainer.worker``s."""
    out = subprocess.run(["pgrep", "-f", "--", f"-m trainer.* {Path(runs_dir).resolve()}"], capture_output=True, text=True)
    return [int(pid) for pid in out.stdout.split()]


def kill(process: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to the process alone (not its trainers) and reap it."""
    process.send_signal(sig)
    process.wait(timeout=60)


def load_trials(name: str, storage: str) -> list[optuna.trial.FrozenTrial]:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def sqlite_url(runs_dir: Path, name: str) -> str:
    return f"sqlite:///{runs_dir.resolve() / name / 'study.db'}"


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
        base = AutoModelForCausalLM.from_pretrained(ROOT / "studies" / "models" / "tiny-llama")
        model = PeftModel.from_pretrained(base, trial.user_attrs["adapter_path"])
        assert model.peft_config["default"].r == trial.params["r"]
