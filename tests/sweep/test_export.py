"""``python -m sweep export``: the exported adapter and the merged model generate what the trial's adapter does."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from tests.sweep.live_study import sweep_cli

NEW_TOKENS = 24


def _greedy_tokens(model, tokenizer, conversations) -> list[list[int]]:
    """Greedy answers to each conversation's first user turn, forced to NEW_TOKENS tokens (past the end of
    the answer, where the logits are flattest, so any difference in the weights shows)."""
    import torch

    answers = []
    for messages in conversations:
        prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            out = model.eval().generate(**ids, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                                        pad_token_id=tokenizer.pad_token_id)
        answers.append(out[0, ids["input_ids"].shape[1]:].tolist())
    return answers


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_export_with_merge_writes_adapter_card_and_merged_model_that_generate_like_the_trial(
        finished_study, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    study = optuna.load_study(study_name=finished_study.name, storage=finished_study.storage)
    best = study.best_trial
    to = tmp_path / "exports" / "best"
    done = sweep_cli("export", *finished_study.args(), "--to", str(to), "--merge")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-2] == (f"exported trial #{best.number} of study {finished_study.name} "
                                            f"(eval loss {best.value:.4f}) to {to}")
    assert sorted(p.name for p in to.parent.iterdir()) == ["best"]  # no staging folder left behind

    trial_adapter = best.user_attrs["adapter_path"]
    spec = json.loads((to / "trial_spec.json").read_text())
    assert spec == json.loads((Path(trial_adapter) / "trial_spec.json").read_text())
    assert spec["trial_number"] == best.number
    card = (to / "README.md").read_text()
    assert _front_matter(card)["base_model"] == spec["model"]["name_or_path"]
    assert _front_matter(card)["library_name"] == "peft" and "lora" in _front_matter(card)["tags"]
    assert f"trial #{best.number}, the best of 2 complete trials" in card
    assert f"| eval loss | {best.value:.4f} |" in card
    assert f"| learning_rate | {best.params['learning_rate']:.4g} |" in card
    merged_card = (to / "merged" / "README.md").read_text()
    assert _front_matter(merged_card)["library_name"] == "transformers"
    assert json.loads((to / "merged" / "config.json").read_text())["dtype"] == "float32"  # the trial's precision

    base_path = spec["model"]["name_or_path"]
    conversations = [json.loads(line)["messages"] for line in open(spec["data"]["eval"]).readlines()[:3]]
    tokenizer = AutoTokenizer.from_pretrained(to)

    def base():
        return AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)

    expected = _greedy_tokens(PeftModel.from_pretrained(base(), trial_adapter), tokenizer, conversations)
    assert expected != _greedy_tokens(base(), tokenizer, conversations)  # the adapter changes the answers
    assert _greedy_tokens(PeftModel.from_pretrained(base(), to), tokenizer, conversations) == expected
    merged = AutoModelForCausalLM.from_pretrained(to / "merged")
    assert _greedy_tokens(merged, AutoTokenizer.from_pretrained(to / "merged"), conversations) == expected


def _study_with_extra_trial(finished_study, tmp_path, state, adapter_path=None):
    """A copy of the finished study (same trial folders) plus one trial recorded with ``state``; its args."""
    runs = tmp_path / "runs"
    (runs / finished_study.name).mkdir(parents=True)
    shutil.copy(finished_study.folder / "study.db", runs / finished_study.name / "study.db")
    study = optuna.load_study(study_name=finished_study.name, storage=f"sqlite:///{runs / finished_study.name / 'study.db'}")
    study.add_trial(create_trial(
        state=state, value=4.0 if state == TrialState.COMPLETE else None, params={"learning_rate": 0.02},
        distributions={"learning_rate": FloatDistribution(1e-3, 5e-2, log=True)},
        user_attrs={"adapter_path": str(adapter_path)} if adapter_path else {},
    ))
    return ["--study", str(finished_study.path), "--runs-dir", str(runs)]


@pytest.mark.parametrize("extra, message", [
    (["--trial", "7"], "error: --trial 7: study results-tiny has no such trial (complete trials: #0, #1)"),
    (["--trial", "best"], "error: --trial: 'best' is not allowed: give a trial number (0, 1, 2, ...)"),
    (["--merge-dtype", "int8", "--merge"],
     "error: --merge-dtype: 'int8' is not allowed: choose one of auto, bfloat16, float16, float32"),
], ids=["no-such-trial", "not-a-number", "bad-dtype"])
def test_export_bad_arguments_are_one_line_errors_and_write_nothing(extra, message, finished_study, tmp_path):
    done = sweep_cli("export", *finished_study.args(), "--to", str(tmp_path / "out"), *extra)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [message]
    assert list(tmp_path.iterdir()) == []


def test_export_of_a_trial_that_did_not_complete_is_refused(finished_study, tmp_path):
    args = _study_with_extra_trial(finished_study, tmp_path, TrialState.FAIL)
    done = sweep_cli("export", *args, "--trial", "2", "--to", str(tmp_path / "out"))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: --trial 2: trial #2 of study results-tiny is FAIL, not COMPLETE; only complete trials have a "
        "final adapter (complete trials: #0, #1)"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["folder-with-a-file", "file"])
def test_export_to_a_taken_destination_is_refused_and_leaves_it_alone(kind, finished_study, tmp_path):
    to = tmp_path / "taken"
    if kind == "file":
        to.write_text("keep me")
        reason = "is a file; give a new or empty folder"
    else:
        to.mkdir()
        (to / "notes.txt").write_text("keep me")
        reason = "exists and is not empty; give a new or empty folder"
    done = sweep_cli("export", *finished_study.args(), "--to", str(to))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"error: --to {to}: {reason}"]
    assert (to if kind == "file" else to / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_export_into_an_empty_folder_works(finished_study, tmp_path):
    to = tmp_path / "empty"
    to.mkdir()
    done = sweep_cli("export", *finished_study.args(), "--trial", "1", "--to", str(to))
    assert done.returncode == 0, done.stderr
    assert (to / "adapter_model.safetensors").is_file() and not (to / "merged").exists()
    assert "trial #1, one (the best is #" in (to / "README.md").read_text()


def test_a_failed_merge_leaves_nothing_half_written(finished_study, tmp_path):
    study = optuna.load_study(study_name=finished_study.name, storage=finished_study.storage)
    broken = tmp_path / "adapter-of-a-deleted-base"
    shutil.copytree(study.best_trial.user_attrs["adapter_path"], broken)
    spec = json.loads((broken / "trial_spec.json").read_text())
    spec["model"]["name_or_path"] = str(tmp_path / "deleted-base-model")
    (broken / "trial_spec.json").write_text(json.dumps(spec))
    args = _study_with_extra_trial(finished_study, tmp_path, TrialState.COMPLETE, broken)
    to = tmp_path / "out"
    done = sweep_cli("export", *args, "--trial", "2", "--to", str(to), "--merge")
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1
    assert done.stderr.splitlines() == [
        f"error: merging the adapter failed (exit 2): the base model {tmp_path / 'deleted-base-model'} is gone "
        "(no config.json there); the adapter's trial_spec.json names it as model.name_or_path"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter-of-a-deleted-base", "runs"]


def _safetensors_dtypes(path: Path) -> set[str]:
    """The dtypes named in a safetensors file's header (8-byte length, then JSON)."""
    raw = path.read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    return {entry["dtype"] for name, entry in header.items() if name != "__metadata__"}


def test_export_merge_dtype_bfloat16_writes_16_bit_weights(finished_study, tmp_path):
    to = tmp_path / "bf16"
    done = sweep_cli("export", *finished_study.args(), "--to", str(to), "--merge", "--merge-dtype", "bfloat16")
    assert done.returncode == 0, done.stderr
    assert _safetensors_dtypes(to / "merged" / "model.safetensors") == {"BF16"}
    assert json.loads((to / "merged" / "config.json").read_text())["dtype"] == "bfloat16"
    assert "(saved as bfloat16)" in (to / "merged" / "README.md").read_text()
