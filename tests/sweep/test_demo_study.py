"""The embedded default, run for real: the shipped demo study through `python -m sweep run`.

Checks what a user relies on: every trial completes with an eval loss and an adapter that PEFT
loads, the losses differ with the hyperparameters, the best adapter beats the base model on the
eval set, `status --json` and `best` report it, and running the command again resumes (nothing to do).
"""

from __future__ import annotations

import json

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.sweep.live_study import DEMO_DATA, TINY_MODEL, status_json, sweep_cli
from trainer.chat_data import IGNORE, encode_rows, set_chat_template
from trainer.rows import read_jsonl
from trainer.samples import chrf


def eval_loss(model, tokenizer) -> float:
    """Mean token loss over the assistant tokens of the demo eval set."""
    rows = encode_rows(tokenizer, read_jsonl(DEMO_DATA / "eval.jsonl"), "chat", responses_only=True, max_len=256)
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for item in rows:
            ids = torch.tensor([item["input_ids"]])
            labels = torch.tensor([item["labels"]])
            n = int((labels[:, 1:] != IGNORE).sum())
            total += model(input_ids=ids, labels=labels).loss.item() * n
            count += n
    return total / count


def test_every_trial_completes_with_eval_loss_and_a_loadable_adapter(demo_run):
    trials = status_json("demo", demo_run)
    assert len(trials) == 6 and {t["state"] for t in trials} == {"COMPLETE"}
    for t in trials:
        attrs = t["user_attrs"]
        assert t["value"] == attrs["eval_losses"][-1][1]
        for key in ("train_loss", "tokens_per_second", "peak_memory_mb", "wall_seconds", "backend", "log_path"):
            assert key in attrs, key
        assert attrs["exit_status"] == 0 and attrs["backend"] == "transformers"
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(TINY_MODEL), attrs["adapter_path"])
        assert model.peft_config["default"].r == t["params"].get("r", 8)
        assert json.loads((demo_run / "demo" / "trials" / f"{t['number']:05d}" / "spec.json").read_text())


def test_losses_differ_visibly_with_the_hyperparameters(demo_run):
    values = [t["value"] for t in status_json("demo", demo_run)]
    assert max(values) - min(values) > 0.3, values


def test_best_adapter_beats_the_base_model(demo_run):
    trials = status_json("demo", demo_run)
    best = min(trials, key=lambda t: t["value"])
    tokenizer = AutoTokenizer.from_pretrained(TINY_MODEL)
    set_chat_template(tokenizer, "llama-3", needs_template=True)
    base = eval_loss(AutoModelForCausalLM.from_pretrained(TINY_MODEL), tokenizer)
    tuned_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(TINY_MODEL),
                                            best["user_attrs"]["adapter_path"])
    tuned = eval_loss(tuned_model, tokenizer)
    assert tuned < base - 0.5, (base, tuned)
    assert abs(tuned - best["value"]) < 0.05  # the recorded objective is this eval loss
    recorded = json.loads((demo_run / "demo" / "base" / "events.jsonl").read_text().splitlines()[-1])
    assert recorded["status"] == "ok" and abs(recorded["eval_loss"] - base) < 0.05  # measured once, before training
    done = sweep_cli("status", "--study", "demo", "--runs-dir", str(demo_run))
    assert f"base model before training: eval_loss {recorded['eval_loss']:.4f}" in done.stdout


def test_samples_are_stored_with_each_trial(demo_run):
    for t in status_json("demo", demo_run):
        samples = t["user_attrs"]["samples"]
        assert len(samples) == 2 and all(s["prompt"] and s["reference"] for s in samples)
        assert t["user_attrs"]["chrf"] == chrf(samples)
    done = sweep_cli("status", "--study", "demo", "--runs-dir", str(demo_run))
    assert "chrF" in done.stdout


def test_best_prints_the_best_trial_and_its_adapter(demo_run):
    trials = status_json("demo", demo_run)
    best = min(trials, key=lambda t: t["value"])
    done = sweep_cli("best", "--study", "demo", "--runs-dir", str(demo_run))
    assert done.returncode == 0
    assert f"#{best['number']}" in done.stdout and best["user_attrs"]["adapter_path"] in done.stdout


def test_running_again_resumes_and_finds_nothing_to_do(demo_run):
    done = sweep_cli("run", "--study", "demo", "--runs-dir", str(demo_run))
    assert done.returncode == 0 and "nothing to do" in done.stdout
    assert len(status_json("demo", demo_run)) == 6


def test_user_defaults_run_first(demo_run):
    first = status_json("demo", demo_run)[0]
    assert first["params"] == {"learning_rate": 2.0e-2, "num_train_epochs": 2, "r": 8}
