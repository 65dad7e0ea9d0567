"""The model card's ``base_model``: a hub id wherever one can be known, else the local folder, on real folders."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import yaml
from huggingface_hub.file_download import repo_folder_name

from sweep.results.model_card import Standing, adapter_card, base_model
from tests.sweep.live_study import ROOT
from trainer.spec import TrialSpec

TINY = ROOT / "studies" / "models" / "tiny-llama"


def model_folder(path: Path, name_or_path: str | None = None) -> Path:
    """A copy of the tiny model's config at ``path``; ``_name_or_path`` recorded as transformers 4 saved it."""
    path.mkdir(parents=True)
    config = json.loads((TINY / "config.json").read_text())
    if name_or_path is not None:
        config["_name_or_path"] = name_or_path
    (path / "config.json").write_text(json.dumps(config))
    return path


def card_of(name_or_path: str, data: dict | None = None) -> tuple[dict, str]:
    spec = TrialSpec.model_validate({
        "study": "cards", "trial_number": 3, "params": {"r": 8},
        "model": {"name_or_path": name_or_path}, "data": data or {"train": "train.jsonl", "eval_fraction": 0.1},
        "lora": {"r": 8, "lora_alpha": 16}, "training": {"learning_rate": 0.01, "num_train_epochs": 1},
        "output_dir": "/tmp/unused",
    })
    trial = optuna.trial.create_trial(value=1.25, params={"r": 8},
                                      distributions={"r": optuna.distributions.CategoricalDistribution([8, 16])},
                                      user_attrs={"backend": "transformers"})
    card = adapter_card(spec, trial, "cards", Standing([trial.number], n_complete=1))
    return yaml.safe_load(card.split("---\n")[1]), card


def test_a_hub_id_is_the_base_model():
    front, card = card_of("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert front["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert 'AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct")' in card
    assert "local folder" not in card


def test_hub_datasets_are_named_with_their_split_and_listed_for_the_hub():
    front, card = card_of("HuggingFaceTB/SmolLM2-135M-Instruct",
                          {"train": "HuggingFaceH4/ultrachat_200k", "train_split": "train_sft", "eval_split": "test_sft"})
    assert front["datasets"] == ["HuggingFaceH4/ultrachat_200k"]
    assert "Training data: the Hugging Face dataset `HuggingFaceH4/ultrachat_200k`, split `train_sft` (row" in card
    assert "Eval set: the Hugging Face dataset `HuggingFaceH4/ultrachat_200k`, split `test_sft`." in card
    front, card = card_of("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert "datasets" not in front and "Training data: `train.jsonl` (row format: auto)" in card
    assert "Eval set: 0.1 of the training rows (split seed 42)." in card


def test_a_hugging_face_cache_snapshot_gives_its_hub_id(tmp_path):
    repo = "AI-Sweden-Models/Llama-3-8B-instruct"
    snapshot = model_folder(tmp_path / "hub" / repo_folder_name(repo_id=repo, repo_type="model") / "snapshots" / "8c2b1a")
    assert base_model(str(snapshot)) == repo
    front, card = card_of(str(snapshot))
    assert front["base_model"] == repo
    assert f"The base model was loaded from the local folder `{snapshot}`." in card
    assert f'from_pretrained("{repo}")' in card


def test_a_saved_folder_gives_the_hub_id_its_config_recorded(tmp_path):
    folder = model_folder(tmp_path / "smollm", "HuggingFaceTB/SmolLM2-135M")
    assert base_model(str(folder)) == "HuggingFaceTB/SmolLM2-135M"
    assert card_of(str(folder))[0]["base_model"] == "HuggingFaceTB/SmolLM2-135M"


def test_a_folder_with_no_hub_id_to_find_is_recorded_as_its_path(tmp_path):
    assert base_model(str(TINY)) == str(TINY)  # saved by transformers 5: no _name_or_path
    front, card = card_of(str(TINY))
    assert front["base_model"] == str(TINY)
    assert "no hub id was found for it (set `base_model` above to one before pushing" in card
    saved_from_a_folder = model_folder(tmp_path / "copy", str(tmp_path / "elsewhere"))
    assert base_model(str(saved_from_a_folder)) == str(saved_from_a_folder)
    relative = model_folder(tmp_path / "relative", "./models/base")
    assert base_model(str(relative)) == str(relative)
