"""Models that cannot serve are refused before the study exists, with one line naming the study file's key.

The trainer-side check (``python -m trainer.row_lengths``) loads their config and tokenizer as a
trial would; nothing is created.
"""

from __future__ import annotations

import json
import shutil

import yaml
from transformers import ViTConfig, ViTModel

from tests.sweep.live_study import TINY_MODEL, sweep_cli, write_study


def study_on(tmp_path, model_dir, chat_template="model"):
    path = write_study(tmp_path, "bad-model", n_trials=2, max_steps=2)
    raw = yaml.safe_load(path.read_text())
    raw["model"]["name_or_path"] = str(model_dir)
    raw["model"]["chat_template"] = chat_template
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_tokenizer_without_chat_template_on_chat_data(tmp_path):
    model = tmp_path / "no-template"
    shutil.copytree(TINY_MODEL, model)
    (model / "chat_template.jinja").unlink()
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    study = study_on(tmp_path, model)
    runs = tmp_path / "runs"
    done = sweep_cli("run", "--study", str(study), "--runs-dir", str(runs))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {study}: model.chat_template: 'model' is not allowed here: ")
    assert "has no chat template" in line and "chat_template: llama-3" in line
    assert not runs.exists()


def test_model_that_is_not_a_causal_lm(tmp_path):
    model = tmp_path / "vit"  # an image encoder: no causal-LM class exists for it
    ViTModel(ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                       image_size=8, patch_size=4)).save_pretrained(model)
    shutil.copy(TINY_MODEL / "tokenizer.json", model / "tokenizer.json")
    shutil.copy(TINY_MODEL / "tokenizer_config.json", model / "tokenizer_config.json")
    study = study_on(tmp_path, model, chat_template="llama-3")
    runs = tmp_path / "runs"
    done = sweep_cli("run", "--study", str(study), "--runs-dir", str(runs))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {study}: model.name_or_path: '{model}' is a 'vit' model, which is not a causal "
                           "language model")
    assert not runs.exists()
