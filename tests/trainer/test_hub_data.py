"""Hugging Face dataset ids as data: read from this host's caches without the network, or refused in one line
that says how to fetch them."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading

import pytest
from datasets.naming import camelcase_to_snakecase
from transformers import AutoTokenizer

from tests.sweep.live_study import ROOT, TINY_MODEL
from tests.trainer.hub_datasets import prepare_in_datasets_cache, snapshot_in_hub_cache
from trainer import data_cache, hub_data
from trainer.data_check import DataRows, check_data
from trainer.rows import RowError
from trainer.spec import DataSpec, TrialSpec
from trainer.trial_data import READER

ID = "Sweden-NLP/Chat-Pairs"  # camel case: the datasets cache folder is Sweden-NLP___chat-pairs


def chat(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"Fråga {i}?"}, {"role": "assistant", "content": f"Svar {i}."}]}


TRAIN, TEST = [chat(i) for i in range(6)], [chat(i) for i in range(6, 8)]


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    home = tmp_path / "hf"
    for name in ("HF_HUB_CACHE", "HF_DATASETS_CACHE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    return home


def test_a_dataset_prepared_by_load_dataset_is_read_by_its_id(hf_home):
    prepare_in_datasets_cache(hf_home, ID, {"train": TRAIN, "test": TEST})
    cached = hub_data.find_cached(ID, None, "data.train")
    assert (cached.prepared, cached.folder) == (True, hf_home / "datasets" / "Sweden-NLP___chat-pairs")
    rows = check_data(DataSpec(train=ID, eval_split="test"), reader=READER)
    assert rows == DataRows(train=TRAIN, eval=TEST, format="chat")
    assert check_data(DataSpec(train=ID, eval_split="test")) is None  # the orchestrator: found, read by trainers


def test_a_snapshot_from_hf_download_is_read_as_the_repository_folder(hf_home):
    snapshot_in_hub_cache(hf_home, ID, {"train": TRAIN, "test": TEST})
    cached = hub_data.find_cached(ID, None, "data.train")
    assert (cached.prepared, cached.folder.name) == (False, "4567cdef")
    rows = check_data(DataSpec(train=ID, train_split="test", eval=ID, eval_split="train"), reader=READER)
    assert rows == DataRows(train=TEST, eval=TRAIN, format="chat")
    with pytest.raises(RowError) as refused:  # the repository declares no subsets: only its default
        check_data(DataSpec(train=ID, eval_split="test", subset="sv"), reader=READER)
    assert refused.value.key == "data.subset" and str(refused.value).startswith(f"{ID}: BuilderConfig 'sv' not found")


def test_eval_fraction_splits_a_hub_dataset_like_a_file(hf_home):
    prepare_in_datasets_cache(hf_home, ID, {"train": TRAIN})
    rows = check_data(DataSpec(train=ID, eval_fraction=0.5), reader=READER)
    assert (len(rows.train), len(rows.eval)) == (3, 3) and sorted(map(str, rows.train + rows.eval)) == \
        sorted(map(str, TRAIN))


def test_a_dataset_in_neither_cache_is_one_line_with_the_command_that_fetches_it(hf_home):
    with pytest.raises(RowError) as refused:
        check_data(DataSpec(train="Sweden-NLP/Chat-Pair", eval_split="test"))
    message = str(refused.value)
    assert refused.value.key == "data.train" and "\n" not in message
    assert message.startswith("Sweden-NLP/Chat-Pair is neither a local file or folder nor a dataset in the "
                              f"Hugging Face caches ({hf_home / 'datasets' / 'Sweden-NLP___chat-pair'} holds no ")
    assert f"{hf_home / 'hub' / 'datasets--Sweden-NLP--Chat-Pair'} no snapshot" in message
    assert ("fetch it once where there is a network: python -c \"import datasets; "
            "datasets.load_dataset('Sweden-NLP/Chat-Pair')\" (or hf download --repo-type dataset "
            "Sweden-NLP/Chat-Pair), then trials read it offline") in message


def test_the_fetch_command_runs_as_printed(hf_home):
    # the printed command is Python that parses, with the subset as load_dataset's second argument
    command = hub_data._fetch_command("org/name", "sv")
    code = command.removeprefix('python -c "').removesuffix('"')
    assert command.startswith('python -c "') and compile(code, "fetch", "exec")
    assert "datasets.load_dataset('org/name', 'sv')" in code


def test_an_unknown_split_names_the_splits_there_are(hf_home):
    prepare_in_datasets_cache(hf_home, ID, {"train": TRAIN, "test": TEST})
    with pytest.raises(RowError) as refused:
        check_data(DataSpec(train=ID, eval_split="tset"), reader=READER)
    assert refused.value.key == "data.eval_split"
    assert str(refused.value) == f"'tset' is not a split of {ID} (did you mean 'test'?); its splits: train, test"


def test_subsets_are_chosen_by_name(hf_home):
    prepare_in_datasets_cache(hf_home, ID, {"train": TRAIN, "test": TEST}, subset="sv")
    prepare_in_datasets_cache(hf_home, ID, {"train": TEST, "test": TRAIN}, subset="en")
    with pytest.raises(RowError, match=r"several subsets in the datasets cache \(en, sv\): choose one with "
                                       r"data.subset") as refused:
        check_data(DataSpec(train=ID, eval_split="test"))
    assert refused.value.key == "data.subset"
    with pytest.raises(RowError, match=r"'svv' is not among the subsets .* \(en, sv\) \(did you mean 'sv'\?\); or "
                                       r"fetch it .*load_dataset\('Sweden-NLP/Chat-Pairs', 'svv'\)"):
        check_data(DataSpec(train=ID, eval_split="test", subset="svv"))
    assert check_data(DataSpec(train=ID, eval_split="test", subset="en"), reader=READER).train == TEST


def test_a_split_or_subset_of_a_local_file_is_refused(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in TRAIN))
    with pytest.raises(RowError) as refused:
        check_data(DataSpec(train=str(data), train_split="train", eval_fraction=0.5))
    assert refused.value.key == "data.train_split"
    assert str(refused.value) == (f"'train' picks a split of a Hugging Face dataset id, and data.train is the local "
                                  f"file {data}; remove it")
    with pytest.raises(RowError, match="'sv' picks a subset of a Hugging Face dataset id") as refused:
        check_data(DataSpec(train=str(data), subset="sv", eval_fraction=0.5))
    assert refused.value.key == "data.subset"


def test_reading_asks_no_hub_even_without_offline_mode(hf_home, tmp_path):
    """A trainer with a cached dataset id and no HF_HUB_OFFLINE makes no request: the hub here records them."""
    prepare_in_datasets_cache(hf_home, ID, {"train": TRAIN, "test": TEST})
    snapshot_in_hub_cache(hf_home, "org/other", {"train": TEST})
    requests = []

    class Hub(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            requests.append(self.path)
            self.send_error(404)

        do_HEAD = do_GET  # noqa: N815

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    code = ("from trainer.data_check import check_data; from trainer.spec import DataSpec; "
            "from trainer.trial_data import READER; "
            f"a = check_data(DataSpec(train={ID!r}, eval_split='test'), reader=READER); "
            "b = check_data(DataSpec(train='org/other', eval_fraction=0.5), reader=READER); "
            "print(len(a.train), len(a.eval), len(b.train) + len(b.eval))")
    try:
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                              env={**_env(), "HF_HOME": str(hf_home), "HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}"})
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["6", "2", "2"] and requests == []


def test_the_cache_key_follows_the_cached_revision(hf_home, tmp_path):
    prepare_in_datasets_cache(hf_home, ID, {"train": TRAIN, "test": TEST}, revision="aaaa1111")
    spec = TrialSpec.model_validate({
        "study": "s", "trial_number": 0, "output_dir": str(tmp_path),
        "model": {"name_or_path": str(TINY_MODEL), "chat_template": "chatml"},
        "data": {"train": ID, "eval_split": "test"},
        "lora": {"r": 4, "lora_alpha": 4}, "training": {"learning_rate": 1e-3, "num_train_epochs": 1},
    })
    tokenizer = AutoTokenizer.from_pretrained(TINY_MODEL)
    first = data_cache.cache_key(spec, tokenizer)
    assert data_cache.cache_key(spec, tokenizer) == first
    assert data_cache.cache_key(spec.model_copy(update={"data": DataSpec(train=ID, eval_split="train")}),
                                tokenizer) != first
    import shutil

    shutil.rmtree(hf_home / "datasets")  # a newer revision downloaded in its place
    prepare_in_datasets_cache(hf_home, ID, {"train": TRAIN, "test": TEST}, revision="bbbb2222")
    assert data_cache.cache_key(spec, tokenizer) != first


@pytest.mark.parametrize("name", ["Chat-Pairs", "ultrachat_200k", "OpenHermes-2.5", "SlimOrca", "oasst1", "GSM8K"])
def test_cache_folder_names_follow_datasets(name):
    assert hub_data._snake(name) == camelcase_to_snakecase(name)


@pytest.mark.parametrize(("value", "is_id"), [("org/name", True), ("name", True), ("org/data.v2", True),
                                              ("data/train.jsonl", False), ("chat.jsonl", False),
                                              ("./org/name", False), ("/abs/org/name", False), ("a/b/c", False)])
def test_what_reads_as_a_dataset_id(value, is_id):
    assert hub_data.looks_like_dataset_id(value) is is_id


def _env() -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    return {**env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def test_an_eval_split_of_a_local_train_file_names_the_file(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in TRAIN))
    with pytest.raises(RowError) as refused:
        check_data(DataSpec(train=str(data), eval_split="test"))
    assert (refused.value.key, str(refused.value)) == (
        "data.eval_split", f"'test' picks a split of a Hugging Face dataset id, and data.train is the local file "
                           f"{data}; remove it")
