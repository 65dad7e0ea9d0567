"""Sample answers and their chrF: in every trial's result, and for the base model before any training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sweep.live_study import DEMO_DATA, ROOT, STUDIES, TINY_MODEL
from trainer.samples import chrf, generate_samples
from trainer.spec import TrialSpec


def write_spec(folder: Path, **changes) -> Path:
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", 32), ("eval", 12)):
        lines = (DEMO_DATA / f"{split}.jsonl").read_text().splitlines()[:rows]
        (data / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    out = folder / "trial"
    out.mkdir(parents=True, exist_ok=True)
    spec = TrialSpec.model_validate({
        "study": "chrf", "trial_number": 0, "output_dir": str(out),
        "model": {"name_or_path": str(TINY_MODEL), "max_seq_length": 128, "load_in_4bit": False,
                  "chat_template": "llama-3", "dtype": "float32"},
        "data": {"train": str(data / "train.jsonl"), "eval": str(data / "eval.jsonl")},
        "lora": {"r": 8, "lora_alpha": 16},
        "training": {"learning_rate": 2e-2, "num_train_epochs": 1, "max_steps": 3, "per_device_train_batch_size": 8,
                     "per_device_eval_batch_size": 16, "warmup_steps": 1, "optim": "adamw_torch", "eval_points": 1},
        "samples": {"count": 5, "max_new_tokens": 8},
        "backend": "transformers",
        **changes,
    })
    path = out / "spec.json"
    spec.write(path)
    return path


def run_trainer(spec_path: Path) -> list[dict]:
    done = subprocess.run([sys.executable, "-m", "trainer", str(spec_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [json.loads(line) for line in (spec_path.parent / "events.jsonl").read_text().splitlines()]


def test_chrf_is_100_for_the_references_and_lower_the_further_the_answers_are():
    samples = [{"prompt": "p", "reference": "Arkivet är för kort", "answer": "Arkivet är för kort"},
               {"prompt": "p", "reference": "Kunde inte öppna filen", "answer": "Kunde inte öppna filen"}]
    assert chrf(samples) == 100.0
    close = [dict(s, answer=s["answer"].replace("för kort", "kort")) for s in samples]
    far = [dict(s, answer="Archive is too short") for s in samples]
    assert 100.0 > chrf(close) > chrf(far) >= 0.0
    assert chrf([]) is None


def test_every_trial_result_carries_its_samples_and_their_chrf(tmp_path):
    found = run_trainer(write_spec(tmp_path))
    result = found[-1]
    assert result["event"] == "result" and result["status"] == "ok", result
    assert len(result["samples"]) == 5
    assert all(set(s) == {"prompt", "reference", "answer"} and s["prompt"] and s["reference"] for s in result["samples"])
    assert result["chrf"] == chrf(result["samples"])


def test_evaluate_only_measures_the_untrained_base_model(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.chat_data import encode_rows, set_chat_template
    from trainer.rows import read_jsonl

    spec_path = write_spec(tmp_path, evaluate_only=True)
    found = run_trainer(spec_path)
    result = found[-1]
    assert result["event"] == "result" and result["status"] == "ok", result
    assert result["steps"] == 0 and result["adapter_path"] is None and result["train_loss"] is None
    assert not (spec_path.parent / "adapter").exists()
    assert len(result["samples"]) == 5 and result["chrf"] == chrf(result["samples"])
    assert next(e for e in found if e["event"] == "setup")["total_steps"] == 0

    # the same loss from the base model itself: one eval batch, mean over its assistant tokens
    model = AutoModelForCausalLM.from_pretrained(str(TINY_MODEL)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(TINY_MODEL))
    set_chat_template(tokenizer, "llama-3", needs_template=True)
    rows = encode_rows(tokenizer, read_jsonl(tmp_path / "data" / "eval.jsonl"), "chat", True, 128)
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            logits = model(torch.tensor([row["input_ids"]])).logits[0, :-1]
            labels = torch.tensor(row["labels"][1:])
            total += torch.nn.functional.cross_entropy(logits, labels, ignore_index=-100, reduction="sum").item()
            count += int((labels != -100).sum())
    assert result["eval_loss"] == pytest.approx(total / count, rel=1e-5)


def test_answers_in_a_batch_are_the_answers_one_at_a_time(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.chat_data import set_chat_template
    from trainer.rows import read_jsonl

    model = AutoModelForCausalLM.from_pretrained(str(TINY_MODEL)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(TINY_MODEL))
    set_chat_template(tokenizer, "llama-3", needs_template=True)
    rows = read_jsonl(STUDIES / "data" / "sv-translate" / "eval-cpu.jsonl")  # prompts of many lengths
    spec = TrialSpec.read(write_spec(tmp_path))
    side, answers = tokenizer.padding_side, {}
    for size in (1, 5):
        spec.training.per_device_eval_batch_size = size
        answers[size] = generate_samples(spec, model, tokenizer, rows, "chat", "transformers")
    assert len({len(tokenizer(s["prompt"])["input_ids"]) for s in answers[5]}) > 1  # the batch was padded
    assert answers[1] == answers[5]
    assert tokenizer.padding_side == side
