"""A study on a Hugging Face dataset id, through the real CLI with no network: read from this host's
datasets cache with an Unsloth template, refused in one line when the cache does not hold it."""

from __future__ import annotations

import json

import yaml

from tests.sweep.live_study import DEMO_DATA, run_sweep, study_trials, write_study
from tests.trainer.hub_datasets import prepare_in_datasets_cache
from trainer.spec import TrialSpec
from trainer.trial_folder import SPEC_FILE

ID = "lora-sweep/demo-chat"


def hub_study(tmp_path, name: str, dataset_id: str = ID, **data):
    """The tiny-model test study with ``data`` taken from the dataset id (its ``test`` split for eval), ChatML."""
    path = write_study(tmp_path, name, 1, max_steps=3, eval_points=1)
    raw = yaml.safe_load(path.read_text())
    raw["model"]["chat_template"] = "chatml"
    raw["data"] = {"train": dataset_id, "eval_split": "test", **data}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def demo_rows(split: str, count: int) -> list[dict]:
    return [json.loads(line) for line in (DEMO_DATA / f"{split}.jsonl").read_text().splitlines()[:count]]


def test_a_study_trains_on_a_cached_dataset_id_offline(tmp_path):
    hf_home = tmp_path / "hf"
    prepare_in_datasets_cache(hf_home, ID, {"train": demo_rows("train", 48), "test": demo_rows("eval", 8)})
    study, runs = hub_study(tmp_path, "hub-data"), tmp_path / "runs"
    done = run_sweep(study, runs, HF_HOME=str(hf_home), HF_ENDPOINT="http://127.0.0.1:9")  # no hub to ask
    assert done.returncode == 0, done.stdout + done.stderr
    (trial,) = study_trials(runs, "hub-data")
    assert trial.state.name == "COMPLETE", trial.user_attrs
    spec = TrialSpec.read(runs / "hub-data" / "trials" / "00000" / SPEC_FILE)
    assert (spec.data.train, spec.data.eval, spec.data.eval_split, spec.model.chat_template) == \
        (ID, None, "test", "chatml")
    assert list((runs / "hub-data" / "cache").glob("tokenized-*"))  # encoded once, keyed by the dataset's fingerprint
    tokenizer_config = json.loads((runs / "hub-data" / "trials" / "00000" / "adapter" / "tokenizer_config.json")
                                  .read_text())
    template = tokenizer_config.get("chat_template") or \
        (runs / "hub-data" / "trials" / "00000" / "adapter" / "chat_template.jinja").read_text()
    assert "<|im_start|>" in template  # the adapter carries the template it was trained with


def test_a_dataset_id_not_in_the_cache_is_refused_in_one_line(tmp_path):
    hf_home = tmp_path / "hf"
    prepare_in_datasets_cache(hf_home, ID, {"train": demo_rows("train", 8), "test": demo_rows("eval", 2)})
    study, runs = hub_study(tmp_path, "hub-missing", dataset_id="lora-sweep/demo-chats"), tmp_path / "runs"
    done = run_sweep(study, runs, HF_HOME=str(hf_home), timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {study}: data.train: lora-sweep/demo-chats is neither a local file or folder "
                           "nor a dataset in the Hugging Face caches")
    assert "datasets.load_dataset('lora-sweep/demo-chats')" in line
    assert not runs.exists()


def test_an_unknown_split_is_refused_before_the_study_by_the_tokenizer_check(tmp_path):
    hf_home = tmp_path / "hf"
    prepare_in_datasets_cache(hf_home, ID, {"train": demo_rows("train", 8), "validation": demo_rows("eval", 2)})
    study, runs = hub_study(tmp_path, "hub-split"), tmp_path / "runs"
    done = run_sweep(study, runs, HF_HOME=str(hf_home), timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: {study}: data.eval_split: 'test' is not a split of {ID}; its splits: train, validation")
    assert not (runs / "hub-split" / "study.db").exists()


def test_study_versions_read_the_new_data_keys_right(tmp_path):
    from sweep.schema.study_file import load_study
    from sweep.study.study_versions import INCOMPARABLE, changes

    current = load_study(str(hub_study(tmp_path, "versions"))).config.model_dump(mode="json")
    assert current["data"]["train"] == ID  # kept as the id, not made a path
    before = json.loads(json.dumps(current))
    for key in ("subset", "train_split", "eval_split"):  # what a study recorded before these keys existed
        before["data"].pop(key)
    before["data"]["eval"] = str(DEMO_DATA / "eval.jsonl")
    current_local = {**current, "data": {**current["data"], "eval_split": None, "eval": before["data"]["eval"]}}
    assert changes(before, current_local) == []  # new keys left unset are no change
    other_split = {**current, "data": {**current["data"], "eval_split": "validation"}}
    (change,) = changes(current, other_split)
    assert change.key == "data.eval_split" and change.key.startswith(INCOMPARABLE)
