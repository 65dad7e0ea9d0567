"""What the GPU scripts share: the random-weight 8B model and a synthetic chat set (about 530 tokens a row)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sh(*cmd: str, timeout: float = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command from the project root, capturing its output."""
    import os

    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def ensure_model(path: Path, size: str = "8b") -> None:
    """Build the random-weight Llama-architecture model and tokenizer once (trainer.make_model)."""
    if (path / "config.json").exists():
        return
    t = time.time()
    done = sh(sys.executable, "-m", "trainer.make_model", size, str(path))
    print(f"built {size} model in {time.time() - t:.0f}s rc={done.returncode} {done.stderr[-300:]}", flush=True)


def synthetic_chat(path: Path, rows: int, seed: int) -> None:
    """Chat rows of random synthetic words: 60-200 in the question, 200-600 in the answer."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for _ in range(rows):
            q = " ".join(f"w{rng.randrange(100, 120000)}" for _ in range(rng.randrange(60, 200)))
            a = " ".join(f"w{rng.randrange(100, 120000)}" for _ in range(rng.randrange(200, 600)))
            f.write(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n")


STUDY_8B = """
name: {name}
model: {{name_or_path: {model}, max_seq_length: 2048, load_in_4bit: true, chat_template: llama-3}}
data: {{train: {data}, eval: {eval}, train_on_responses_only: true}}
training:
  per_device_train_batch_size: 8
  max_steps: {steps}
  warmup_steps: 5
  optim: adamw_8bit
  weight_decay: 0.01
  lr_scheduler_type: linear
  eval_points: 1
  seed: 3407
search:
  n_trials: {n_trials}
  params:
    learning_rate: {{low: 1.0e-4, high: 4.0e-4, log: true}}
    r: 16
    lora_alpha: {{choices: [16, 4, 32]}}
    use_rslora: {{choices: [false, true]}}
    num_train_epochs: 1
  sampler: {{name: random, seed: 1}}
  pruner: {{name: none}}
  enqueue: {enqueue}
execution: {{timeout_minutes: 9, worker_max_leak_mb: 8000}}
"""


# The first three trials: the settings of bench/bare_train.py, then the same scale (4 / sqrt(16) = 16 / 16)
# through rsLoRA, which trains identically (same seed, same initialisation), then another. Later trials
# draw other learning rates: the sweep answers a repeated configuration from the earlier trial.
ENQUEUE = [{"learning_rate": 2.0e-4, "lora_alpha": 16, "use_rslora": False},
           {"learning_rate": 2.0e-4, "lora_alpha": 4, "use_rslora": True},
           {"learning_rate": 2.0e-4, "lora_alpha": 32, "use_rslora": False}]


def fixture_8b(work: Path, steps: int) -> tuple[Path, Path]:
    """``(model, train data)`` under ``work``: the random-weight 8B model (built on first use) and synthetic
    chat for ``steps`` steps of batch 8 (``eval.jsonl`` beside it: 16 rows), written anew: seeded, so the
    same every time."""
    model, data = work / "llama-8b", work / "data" / "train.jsonl"
    ensure_model(model)
    synthetic_chat(data, 8 * steps, 1)
    synthetic_chat(data.with_name("eval.jsonl"), 16, 2)
    return model, data


def study_8b(work: Path, name: str, steps: int, n_trials: int, model: Path, data: Path) -> Path:
    """A study file under ``work`` of ``n_trials`` QLoRA trials (r=16, batch 8, adamw_8bit, linear schedule;
    ``ENQUEUE`` first) on the ``model`` and ``data`` that :func:`fixture_8b` made."""
    path = work / f"{name}.yaml"
    path.write_text(STUDY_8B.format(name=name, model=model, data=data, eval=data.with_name("eval.jsonl"), steps=steps,
                                    n_trials=n_trials, enqueue=json.dumps(ENQUEUE)))
    return path
