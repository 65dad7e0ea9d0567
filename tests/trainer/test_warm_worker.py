"""A warm worker keeps the base model loaded between trials, and a trial on the kept base trains
exactly as it would in a fresh process: same eval losses, same adapter weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.sweep.live_study import TINY_MODEL, demo_data_slice, events, run_module, run_trainer
from trainer.spec import TrialSpec
from trainer.trial_folder import ADAPTER_DIR, SPEC_FILE


def spec(folder: Path, number: int, r: int, alpha: float, rslora: bool, *, max_seq_length: int = 128,
         bias: str = "none") -> Path:
    train, evaluation = demo_data_slice(folder, 48, 16)
    out = folder / f"trial-{number}"
    out.mkdir(parents=True, exist_ok=True)
    trial = TrialSpec.model_validate({
        "study": "warm", "trial_number": number, "output_dir": str(out),
        "model": {"name_or_path": str(TINY_MODEL), "max_seq_length": max_seq_length,
                  "load_in_4bit": False, "chat_template": "llama-3", "dtype": "float32"},
        "data": {"train": str(train), "eval": str(evaluation)},
        "lora": {"r": r, "lora_alpha": alpha, "use_rslora": rslora, "bias": bias},
        "training": {"learning_rate": 2e-2, "num_train_epochs": 1, "max_steps": 4, "per_device_train_batch_size": 8,
                     "per_device_eval_batch_size": 16, "warmup_steps": 1, "optim": "adamw_torch",
                     "weight_decay": 0.0, "eval_points": 2},
        "samples": {"count": 1, "max_new_tokens": 4},
        "backend": "transformers",
    })
    path = out / SPEC_FILE
    trial.write(path)
    return path


def run_in_worker(specs: list[Path], folder: Path) -> None:
    requests = "".join(json.dumps({"spec": str(s), "env": {}}) + "\n" for s in specs)
    done = run_module("trainer.worker", "--folder", str(folder), input=requests, CUDA_VISIBLE_DEVICES="")
    assert done.returncode == 0, done.stdout + done.stderr


def outcome(spec_path: Path) -> tuple[str, list[float], float]:
    found = events(spec_path.parent)
    setup = next(e for e in found if e["event"] == "setup")
    base = next(n for n in setup["notes"] if n.startswith("base="))
    result = found[-1]
    assert result["event"] == "result" and result["status"] == "ok", result
    return base, [e["eval_loss"] for e in found if e["event"] == "eval"], result["train_loss"]


def adapter_weights(spec_path: Path) -> dict[str, torch.Tensor]:
    return load_file(spec_path.parent / ADAPTER_DIR / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def worker_run(tmp_path_factory):
    """Three trials in one warm worker: the second and third attach their LoRA to the kept base."""
    folder = tmp_path_factory.mktemp("warm")
    specs = [spec(folder, 0, 8, 16, False), spec(folder, 1, 4, 32, True), spec(folder, 2, 16, 8, False)]
    run_in_worker(specs, folder / "worker")
    return folder, specs


def test_later_trials_reuse_the_loaded_base(worker_run):
    _, specs = worker_run
    assert [outcome(s)[0] for s in specs] == ["base=loaded", "base=kept", "base=kept"]


def test_a_trial_on_the_kept_base_equals_one_in_a_fresh_process(worker_run):
    folder, specs = worker_run
    fresh = spec(folder / "fresh", 1, 4, 32, True)
    run_trainer(fresh, CUDA_VISIBLE_DEVICES="")
    base, fresh_evals, fresh_train = outcome(fresh)
    assert base == "base=loaded"
    _, kept_evals, kept_train = outcome(specs[1])
    assert kept_evals == pytest.approx(fresh_evals, rel=1e-5) and len(kept_evals) == 2
    assert kept_train == pytest.approx(fresh_train, rel=1e-5)
    kept, new = adapter_weights(specs[1]), adapter_weights(fresh)
    assert kept.keys() == new.keys()
    for name in kept:
        torch.testing.assert_close(kept[name], new[name], rtol=1e-4, atol=1e-6)


def test_another_model_section_or_trained_biases_load_afresh(tmp_path):
    specs = [spec(tmp_path, 0, 4, 16, False), spec(tmp_path, 1, 4, 16, False, max_seq_length=96),
             spec(tmp_path, 2, 4, 16, False, max_seq_length=96, bias="all"),
             spec(tmp_path, 3, 4, 16, False, max_seq_length=96)]
    run_in_worker(specs, tmp_path / "worker")
    # a trial that trained the base's biases changed it: the one after it cannot reuse it
    assert [outcome(s)[0] for s in specs] == ["base=loaded", "base=loaded", "base=kept", "base=loaded"]
