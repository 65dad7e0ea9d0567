"""Bad input through the real CLI: one line per problem, exit 2, no traceback, the study untouched.

Each case of a study file, its model or its data is refused before the study exists: one line
``error: FILE: KEY: ...`` naming the value and what is allowed, and no runs folder (no study.db, no
trial folder). None of them trains; the ones that need the tokenizer (row lengths, a chat template,
the model's kind) take the few seconds of the trainer-side check.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
import yaml

from tests.sweep.live_study import STUDIES, TINY_MODEL, sweep_cli, write_study


def demo_copy(tmp_path: Path, edit=lambda text: text) -> Path:
    """The demo study with absolute paths, edited."""
    text = (STUDIES / "demo.yaml").read_text()
    text = text.replace("models/tiny-llama", str(STUDIES / "models/tiny-llama"))
    text = text.replace("data/demo/", str(STUDIES / "data/demo") + "/")
    path = tmp_path / "study.yaml"
    path.write_text(edit(text))
    return path


def assert_user_error(done, *needles: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines and all(line.startswith("error: ") for line in lines), done.stderr
    for needle in needles:
        assert needle in done.stderr, done.stderr


def test_unknown_key_exits_2_with_one_line_and_creates_nothing(tmp_path):
    study = demo_copy(tmp_path, lambda t: t.replace("weight_decay:", "weight_decay_rate:"))
    runs = tmp_path / "runs"
    done = sweep_cli("run", "--study", str(study), "--runs-dir", str(runs))
    assert_user_error(done, str(study), "training.weight_decay_rate: unknown key")
    assert len(done.stderr.strip().splitlines()) == 1
    assert not runs.exists()


def test_verbose_shows_the_traceback(tmp_path):
    study = demo_copy(tmp_path, lambda t: t.replace("weight_decay:", "weight_decay_rate:"))
    done = sweep_cli("-v", "run", "--study", str(study), "--runs-dir", str(tmp_path / "runs"))
    assert done.returncode != 0 and "Traceback" in done.stderr


def test_rows_in_no_known_format(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "Hej?", "answer": "Hej!"}) + "\n")
    study = demo_copy(tmp_path, lambda t: t.replace(str(STUDIES / "data/demo/train.jsonl"), str(bad)))
    done = sweep_cli("run", "--study", str(study), "--runs-dir", str(tmp_path / "runs"))
    assert_user_error(done, "data.train", "line 1 is in none of the formats", "['answer', 'question']")


def test_empty_eval_split(tmp_path):
    study = demo_copy(tmp_path, lambda t: t.replace(f"eval: {STUDIES / 'data/demo/eval.jsonl'}", "eval_fraction: 0.001"))
    done = sweep_cli("run", "--study", str(study), "--runs-dir", str(tmp_path / "runs"))
    assert_user_error(done, "data.eval_fraction: 0.001 of 400 rows leaves an empty eval set")


def test_missing_model_folder(tmp_path):
    study = demo_copy(tmp_path, lambda t: t.replace(str(STUDIES / "models/tiny-llama"), str(tmp_path / "nope")))
    done = sweep_cli("run", "--study", str(study), "--runs-dir", str(tmp_path / "runs"))
    assert_user_error(done, "model.name_or_path", "nope", "config.json")


def test_status_of_a_study_never_run(tmp_path):
    done = sweep_cli("status", "--study", "demo", "--runs-dir", str(tmp_path / "runs"))
    assert_user_error(done, "no study database", "python -m sweep run --study demo")


def test_bad_input_after_a_run_leaves_the_database_untouched(tmp_path, demo_run):
    runs = tmp_path / "runs"
    shutil.copytree(demo_run, runs)
    db = runs / "demo" / "study.db"
    before = _trials(db)
    study = demo_copy(tmp_path, lambda t: t.replace("n_trials: 6", "n_trials: -1").replace("\ndescription", "\nname: demo\ndescription"))
    done = sweep_cli("run", "--study", str(study), "--runs-dir", str(runs))
    assert_user_error(done, "search.n_trials", "-1")
    assert _trials(db) == before


def _trials(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute("select number, state from trials order by number").fetchall()


def edited_study(tmp_path: Path, edit, name: str = "bad") -> Path:
    """The small tiny-model study of the live tests, its parsed YAML changed by ``edit(raw)``."""
    path = write_study(tmp_path, name, 2)
    raw = yaml.safe_load(path.read_text())
    edit(raw)
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    return path


def run_refused(tmp_path: Path, study: Path, *needles: str, env: dict | None = None) -> str:
    """``sweep run`` of ``study`` exits 2 with one line holding ``needles`` and creates no runs folder."""
    runs = tmp_path / "runs"
    done = sweep_cli("run", "--study", str(study), "--runs-dir", str(runs), **(env or {}))
    assert_user_error(done, *needles)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert not runs.exists(), "a refused run creates nothing"
    return lines[0]


def set_key(dotted: str, value):
    def edit(raw):
        *parents, last = dotted.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return edit


def test_data_folder_that_is_not_a_saved_dataset(tmp_path):
    folder = tmp_path / "chat"
    folder.mkdir()
    shutil.copy(STUDIES / "data/demo/train.jsonl", folder / "train.jsonl")
    study = edited_study(tmp_path, set_key("data.train", str(folder)))
    run_refused(tmp_path, study, f"{study}: data.train: {folder} is a folder but not a dataset saved with datasets",
                "dataset_info.json", "it holds train.jsonl: give the file itself")


def test_data_folder_with_several_splits_names_them(tmp_path):
    from datasets import Dataset, DatasetDict

    rows = [json.loads(line) for line in (STUDIES / "data/demo/train.jsonl").read_text().splitlines()[:8]]
    DatasetDict({"train": Dataset.from_list(rows), "test": Dataset.from_list(rows)}).save_to_disk(tmp_path / "dd")
    study = edited_study(tmp_path, set_key("data.train", str(tmp_path / "dd")))
    run_refused(tmp_path, study, "data.train", "holds several splits (train, test)", f"e.g. {tmp_path / 'dd/train'}")


def test_saved_dataset_whose_rows_are_in_no_format(tmp_path):
    """A real saved dataset: its rows are read by the trainer-side check (the orchestrator cannot import datasets)."""
    from datasets import Dataset

    Dataset.from_list([{"question": "Hej?", "answer": "Hej!"}] * 4).save_to_disk(tmp_path / "qa")
    study = edited_study(tmp_path, set_key("data.train", str(tmp_path / "qa")))
    run_refused(tmp_path, study, f"{study}: data.train: {tmp_path / 'qa'}: row 1 is in none of the formats",
                "['answer', 'question']")


def test_saved_dataset_left_without_train_rows_by_eval_fraction(tmp_path):
    from datasets import Dataset

    rows = [json.loads(line) for line in (STUDIES / "data/demo/train.jsonl").read_text().splitlines()[:2]]
    Dataset.from_list(rows).save_to_disk(tmp_path / "two")

    def edit(raw):
        raw["data"] = {"train": str(tmp_path / "two"), "eval_fraction": 0.9}
    run_refused(tmp_path, edited_study(tmp_path, edit),
                "data.eval_fraction: 0.9 of 2 rows leaves an empty train set", "smaller fraction")


def test_eval_fraction_that_leaves_no_train_rows(tmp_path):
    two = tmp_path / "two.jsonl"
    two.write_text("".join((STUDIES / "data/demo/train.jsonl").read_text().splitlines(keepends=True)[:2]))

    def edit(raw):
        raw["data"] = {"train": str(two), "eval_fraction": 0.9}
    run_refused(tmp_path, edited_study(tmp_path, edit), "data.eval_fraction: 0.9 of 2 rows leaves an empty train set")


@pytest.mark.parametrize(("content", "why"), [
    (bytes(range(256)) * 4, ":1: NUL bytes: binary data or UTF-16 text"),
    ((STUDIES / "data/demo/train.jsonl").read_text(encoding="utf-8").encode("utf-16"), "UTF-16 text, not UTF-8"),
    (b'{"text": "hej"}\n' + '{"text": "räksmörgås"}\n'.encode("latin-1"), ":2: not UTF-8 text (byte 0xe4"),
], ids=["binary", "utf-16", "latin-1"])
def test_data_file_that_is_not_utf8_text(tmp_path, content, why):
    data = tmp_path / "train.jsonl"
    data.write_bytes(content)
    study = edited_study(tmp_path, set_key("data.train", str(data)))
    run_refused(tmp_path, study, f"{study}: data.train: {data}", why)


def test_chat_role_that_is_not_allowed_names_the_role_and_the_line(tmp_path):
    lines = (STUDIES / "data/demo/train.jsonl").read_text().splitlines()[:5]
    lines[3] = lines[3].replace('"role":"user"', '"role":"human"', 1)
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(lines[:2] + [""] + lines[2:]) + "\n")  # a blank line: line 5 is row 4
    study = edited_study(tmp_path, set_key("data.train", str(data)))
    run_refused(tmp_path, study, f"data.train: {data}: line 5: messages[0].role 'human' is not allowed",
                "allowed: assistant, system, tool, user")


def test_study_file_that_is_a_folder(tmp_path):
    (tmp_path / "studies.yaml").mkdir()
    run_refused(tmp_path, tmp_path / "studies.yaml", "studies.yaml: is a folder, not a study file")


def test_study_file_that_is_not_utf8(tmp_path):
    study = write_study(tmp_path, "utf16", 2)
    study.write_bytes(study.read_text().encode("utf-16"))
    run_refused(tmp_path, study, f"{study}: not UTF-8 text (byte 0xff at offset 0)")


@pytest.mark.parametrize("name", [".", "..", "../elsewhere", "a/b", ""])
def test_study_name_that_would_leave_the_runs_folder(tmp_path, name):
    study = edited_study(tmp_path, set_key("name", name))
    run_refused(tmp_path, study, f"{study}: name: {name!r} is not allowed", "not '.' or '..'")
    assert not (tmp_path / "elsewhere").exists()


def test_study_file_whose_name_would_be_dot_dot(tmp_path):
    study = edited_study(tmp_path, lambda raw: raw.pop("name"))
    dots = study.rename(tmp_path / "...yaml")  # its stem, the default name, is ".."
    run_refused(tmp_path, dots, "name: '..' (the file's name) is not allowed", "set name: in it")


@pytest.mark.parametrize(("key", "value", "needles"), [
    ("search.params.num_train_epochs", {"low": 1, "high": 200},
     ["search.params.num_train_epochs.high: 200 is not allowed: num_train_epochs should be less than or equal to 100"]),
    ("search.params.r", {"choices": [8, 2048]},
     ["search.params.r.choices: [8, 2048] is not allowed: r should be less than or equal to 1024", "(2048 is not)"]),
    ("search.params.learning_rate", 3.0, ["search.params.learning_rate.value: 3.0 is not allowed",
                                          "less than or equal to 1"]),
    ("search.params", {}, ["search.params: nothing to search: every parameter is fixed (learning_rate=0.0002",
                           "all 2 trials would train the same configuration", "n_trials: 1"]),
])
def test_values_the_trainer_would_reject_are_refused_by_the_schema(tmp_path, key, value, needles):
    def edit(raw):
        set_key(key, value)(raw)
        raw["search"]["enqueue"] = []  # the default entry would be outside some of these spaces
    run_refused(tmp_path, edited_study(tmp_path, edit), *needles)


def test_hub_id_that_is_not_in_the_cache_is_refused_at_once(tmp_path):
    study = edited_study(tmp_path, set_key("model.name_or_path", "AI-Sweden-Models/Llama-3-8B-instrukt"))
    started = time.monotonic()
    run_refused(tmp_path, study, "model.name_or_path: 'AI-Sweden-Models/Llama-3-8B-instrukt' is not allowed",
                f"{tmp_path / 'hub/models--AI-Sweden-Models--Llama-3-8B-instrukt'} has no snapshot",
                "HF_HUB_OFFLINE", env={"HF_HUB_CACHE": str(tmp_path / "hub")})
    assert time.monotonic() - started < 30  # the hub is never asked (offline it took about 54 s per trial)


def test_typo_in_a_relative_model_folder_is_refused_at_once(tmp_path):
    shutil.copytree(TINY_MODEL, tmp_path / "models" / "tiny-llama")
    study = edited_study(tmp_path, set_key("model.name_or_path", "models/tiny-lama"))
    run_refused(tmp_path, study, f"model.name_or_path: 'models/tiny-lama' is not allowed: "
                                 f"{tmp_path / 'models/tiny-lama'} does not exist")


def test_every_row_longer_than_max_seq_length(tmp_path):
    study = edited_study(tmp_path, set_key("model.max_seq_length", 16))
    line = run_refused(tmp_path, study, f"{study}: model.max_seq_length: 16 is shorter than every row of data.train",
                       "all 96 rows are longer")
    shortest, longest = (int(n) for n in line.split("rows are longer: ")[1].split(" tokens")[0].split(" to "))
    assert 16 < shortest <= longest


def test_rows_partly_longer_than_max_seq_length_are_a_warning_not_an_error(tmp_path):
    """The run goes on (here it stops at the next check, a bad --gpus), after one warning naming the rows."""
    study = edited_study(tmp_path, set_key("model.max_seq_length", 64))
    runs = tmp_path / "runs"
    done = sweep_cli("run", "--study", str(study), "--runs-dir", str(runs), "--storage", "bogus://x")
    assert done.returncode == 2, done.stderr
    warning, error = done.stderr.strip().splitlines()
    assert warning.startswith(f"warning: {study}: ") and "rows of data.train are longer than model.max_seq_length " \
        "(64 tokens; the longest has" in warning
    assert error.startswith("error: --storage bogus://x")
    assert not runs.exists()


def test_load_in_4bit_on_a_host_without_gpu(tmp_path):
    study = edited_study(tmp_path, set_key("model.load_in_4bit", True))
    run_refused(tmp_path, study, f"{study}: model.load_in_4bit: true needs a GPU", "set it to false")


def test_text_rows_with_train_on_responses_only(tmp_path):
    data = tmp_path / "text.jsonl"
    data.write_text("".join(json.dumps({"text": f"Rad {i} av en svensk text."}) + "\n" for i in range(20)))

    def edit(raw):
        raw["data"] = {"train": str(data), "eval_fraction": 0.2, "train_on_responses_only": True}
    run_refused(tmp_path, edited_study(tmp_path, edit),
                "data.train_on_responses_only: true needs chat or alpaca rows, the rows are text")
