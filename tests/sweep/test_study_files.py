"""Study files: every shipped one validates, and every schema rule gives one line naming file, key and value."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sweep.checks.model_source import hub_cache_dir
from sweep.errors import UserError
from sweep.schema.study_file import load_study
from tests.sweep.live_study import DEMO_DATA, MINIMAL_STUDY, STUDIES, TINY_MODEL, study_errors, write_study_text

SHIPPED = sorted(STUDIES.glob("*.yaml"))


def test_studies_folder_ships_the_three_studies():
    assert {p.stem for p in SHIPPED} >= {"demo", "lr-rank", "full-space", "smollm2-sv", "smollm2-sv-cpu"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_study_validates(path):
    study = load_study(str(path), resolve_paths=False)
    assert study.name == path.stem
    assert study.config.search.n_trials >= 1


def test_demo_resolves_its_model_and_data_relative_to_the_study_file(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # independent of the working directory
    study = load_study(str(STUDIES / "demo.yaml"))
    assert Path(study.config.model.name_or_path) == TINY_MODEL
    assert Path(study.config.data.train) == DEMO_DATA / "train.jsonl"


def test_full_space_searches_all_five_parameters():
    space = load_study("full-space", resolve_paths=False).config.search.params
    assert set(space.searched_names()) == {"learning_rate", "num_train_epochs", "r", "alpha_per_rank", "use_rslora"}


def test_lr_rank_is_the_users_8b_study():
    config = load_study("lr-rank", resolve_paths=False).config
    assert config.model.name_or_path == "AI-Sweden-Models/Llama-3-8B-instruct"
    assert config.model.load_in_4bit is True
    assert set(config.search.params.searched_names()) == {"learning_rate", "r"}


def test_a_valid_file_loads(tmp_path):
    assert load_study(str(write_study_text(tmp_path, MINIMAL_STUDY))).config.search.n_trials == 2


def test_unknown_key_is_named_with_a_suggestion(tmp_path):
    (line,) = study_errors(write_study_text(tmp_path, MINIMAL_STUDY.replace("max_seq_length", "max_seq_lenght")))
    assert "model.max_seq_lenght: unknown key" in line
    assert "did you mean 'max_seq_length'" in line


def test_negative_learning_rate_names_key_and_value(tmp_path):
    (line,) = study_errors(write_study_text(tmp_path, MINIMAL_STUDY.replace("low: 1.0e-4", "low: -1.0e-4")))
    assert "search.params.learning_rate.low" in line and "-0.0001" in line and "greater than 0" in line


def test_low_above_high(tmp_path):
    (line,) = study_errors(write_study_text(tmp_path, MINIMAL_STUDY.replace("low: 1.0e-4", "low: 1.0e-1")))
    assert "search.params.learning_rate" in line and "low must not exceed high" in line


def test_empty_choices(tmp_path):
    (line,) = study_errors(write_study_text(tmp_path, MINIMAL_STUDY.replace("choices: [4, 8]", "choices: []")))
    assert "search.params.r.choices" in line and "[]" in line and "at least 1" in line


def test_all_problems_of_a_file_are_reported_together(tmp_path):
    text = MINIMAL_STUDY.replace("choices: [4, 8]", "choices: []").replace("n_trials: 2", "n_trials: 0")
    lines = study_errors(write_study_text(tmp_path, text + "colour: red\n"))
    assert len(lines) == 3
    assert any("search.n_trials" in line and "0" in line for line in lines)
    assert any("colour: unknown key" in line for line in lines)


def test_missing_required_section(tmp_path):
    (line,) = study_errors(write_study_text(tmp_path, MINIMAL_STUDY.replace("search:\n  n_trials: 2", "search:\n  sampler: {name: tpe}")))
    assert "search.n_trials: required key is missing" in line


def test_bad_choice_lists_the_allowed_values(tmp_path):
    (line,) = study_errors(write_study_text(tmp_path, MINIMAL_STUDY + "training:\n  lr_scheduler_type: cosin\n"))
    assert "training.lr_scheduler_type: 'cosin' is not allowed" in line and "'cosine'" in line


def test_unknown_chat_template_gets_a_suggestion_and_the_known_names(tmp_path):
    (line,) = study_errors(write_study_text(tmp_path, MINIMAL_STUDY.replace("chat_template: llama-3", "chat_template: chatlm")))
    assert "model.chat_template: 'chatlm' is not allowed: unknown chat template (did you mean 'chatml'?); " in line
    assert "allowed: model (the tokenizer's own), unsloth, zephyr, chatml, " in line


def test_eval_and_eval_fraction_are_exclusive(tmp_path):
    text = MINIMAL_STUDY.replace("  eval: ", "  eval_fraction: 0.1\n  eval: ")
    (line,) = study_errors(write_study_text(tmp_path, text))
    assert "data" in line and "either eval or eval_fraction" in line


def test_no_eval_set_at_all(tmp_path):
    text = "\n".join(line for line in MINIMAL_STUDY.splitlines() if not line.startswith("  eval:"))
    (line,) = study_errors(write_study_text(tmp_path, text))
    assert "an eval set is needed" in line


def test_alpha_per_rank_cannot_mix_with_choices(tmp_path):
    text = MINIMAL_STUDY + "    lora_alpha: {alpha_per_rank: [1, 2], choices: [16]}\n"
    (line,) = study_errors(write_study_text(tmp_path, text))
    assert "search.params.lora_alpha" in line and "alpha_per_rank alone" in line


def test_enqueued_configuration_must_lie_in_the_space(tmp_path):
    text = MINIMAL_STUDY + "  enqueue:\n    - {learning_rate: 2.0e-4, r: 64}\n"
    (line,) = study_errors(write_study_text(tmp_path, text))
    assert "search.enqueue" in line or "search" in line
    assert "r=64" in line and "outside the search space" in line


def test_enqueue_with_alpha_as_multiple_of_rank(tmp_path):
    text = MINIMAL_STUDY + "    lora_alpha: {alpha_per_rank: [1, 2]}\n  enqueue:\n    - {r: 8, lora_alpha: 16}\n"
    study = load_study(str(write_study_text(tmp_path, text)))
    entry = study.config.search.enqueue[0]
    assert study.config.search.params.to_optuna_params(entry) == {"r": 8, "alpha_per_rank": 2}


def test_fixed_parameter_shorthand(tmp_path):
    study = load_study(str(write_study_text(tmp_path, MINIMAL_STUDY.replace("choices: [4, 8]}", "value: 8}"))))
    assert not study.config.search.params.r.searched


def test_model_path_that_does_not_exist(tmp_path):
    (line,) = study_errors(write_study_text(tmp_path, MINIMAL_STUDY.replace(str(TINY_MODEL), "./no-such-model")))
    assert "model.name_or_path" in line and "'./no-such-model'" in line and "hub id" in line


def cache_snapshot(cache: Path, hub_id: str) -> Path:
    """A Hugging Face hub cache holding ``hub_id`` as ``hf download`` leaves it: models--ORG--NAME/snapshots/REV/."""
    snapshot = cache / f"models--{hub_id.replace('/', '--')}" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    shutil.copy(TINY_MODEL / "config.json", snapshot / "config.json")
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0123abcd")
    return snapshot


def test_hub_id_in_the_hugging_face_cache_is_accepted(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    cache_snapshot(tmp_path / "hub", "AI-Sweden-Models/Llama-3-8B-instruct")
    study = load_study(str(write_study_text(tmp_path, MINIMAL_STUDY.replace(str(TINY_MODEL), "AI-Sweden-Models/Llama-3-8B-instruct"))))
    assert study.config.model.name_or_path == "AI-Sweden-Models/Llama-3-8B-instruct"


@pytest.mark.parametrize("offline", ["", "1"])
def test_hub_id_not_in_the_cache_names_the_places_it_looked(tmp_path, monkeypatch, offline):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    cache_snapshot(tmp_path / "hf" / "hub", "AI-Sweden-Models/Llama-3-8B-instruct")
    (line,) = study_errors(write_study_text(tmp_path, MINIMAL_STUDY.replace(str(TINY_MODEL), "AI-Sweden-Models/Llama-3-8B-instrukt")))
    assert "model.name_or_path: 'AI-Sweden-Models/Llama-3-8B-instrukt' is not allowed" in line
    assert f"{tmp_path / 'AI-Sweden-Models/Llama-3-8B-instrukt'} does not exist" in line
    assert f"{tmp_path / 'hf/hub/models--AI-Sweden-Models--Llama-3-8B-instrukt'} has no snapshot" in line
    assert "hf download AI-Sweden-Models/Llama-3-8B-instrukt" in line
    assert ("HF_HUB_OFFLINE is set here" if offline else "HF_HUB_OFFLINE=1") in line


def test_typo_in_a_relative_model_folder_is_a_path_not_a_hub_id(tmp_path):
    shutil.copytree(TINY_MODEL, tmp_path / "models" / "tiny-llama")
    (line,) = study_errors(write_study_text(tmp_path, MINIMAL_STUDY.replace(str(TINY_MODEL), "models/tiny-lama")))
    assert f"'models/tiny-lama' is not allowed: {tmp_path / 'models/tiny-lama'} does not exist" in line
    assert "Hugging Face cache" not in line


def test_hub_cache_folder_is_found_as_huggingface_hub_finds_it(tmp_path):
    home = Path.home()
    assert hub_cache_dir({}) == home / ".cache/huggingface/hub"
    assert hub_cache_dir({"XDG_CACHE_HOME": "/x"}) == Path("/x/huggingface/hub")
    assert hub_cache_dir({"HF_HOME": "/h", "XDG_CACHE_HOME": "/x"}) == Path("/h/hub")
    assert hub_cache_dir({"HF_HUB_CACHE": "/c", "HF_HOME": "/h"}) == Path("/c")


def test_missing_dataset(tmp_path):
    (line,) = study_errors(write_study_text(tmp_path, MINIMAL_STUDY.replace(str(DEMO_DATA / "train.jsonl"), "missing.jsonl")))
    assert "data.train" in line and "'missing.jsonl'" in line and "does not exist" in line


def test_malformed_yaml_names_the_line(tmp_path):
    (line,) = study_errors(write_study_text(tmp_path, MINIMAL_STUDY + "  enqueue: [\n"))
    assert "not valid YAML" in line and f"{tmp_path / 's.yaml'}:" in line


def test_missing_study_file_lists_known_studies():
    with pytest.raises(UserError, match=r"no-such-study: no study of that name.*demo"):
        load_study("no-such-study")


@pytest.mark.parametrize("name", ["smollm2-sv", "smollm2-sv-cpu"])
def test_smollm2_studies_train_on_the_shipped_swedish_rows(name):
    config = load_study(name, resolve_paths=False).config
    # the folder `python -m trainer.make_model smollm2 studies/models/smollm2-135m-instruct` writes
    assert config.model.name_or_path == "./models/smollm2-135m-instruct"
    assert config.model.chat_template == "model" and config.samples.count > 0
    for path in (config.data.train, config.data.eval):
        assert (STUDIES / path).is_file() and "sv-translate" in path
