"""One data check for the orchestrator and the trainer: the same bad data is refused by ``sweep run``'s
pre-flight and by a trainer started on it, with the same words (``KEY: MESSAGE``, the study file's key first)."""

from __future__ import annotations

import json

import pytest
import yaml
from datasets import Dataset

from sweep.checks.preflight import check_data as preflight
from sweep.errors import UserError
from sweep.schema.study_file import load_study
from tests.sweep.live_study import run_trainer, write_study
from trainer.data_check import DataRows, check_data
from trainer.rows import RowError
from trainer.spec import LoraSpec, TrainingSpec, TrialSpec
from trainer.trial_data import READER
from trainer.trial_folder import SPEC_FILE

CHAT = {"messages": [{"role": "user", "content": "Hej"}, {"role": "assistant", "content": "Hej!"}]}
ALPACA = {"instruction": "Säg hej", "input": "", "output": "Hej"}


def study_with(tmp_path, train_rows: list | None = None, eval_rows: list | None = None, **data):
    """A study file on the tiny model whose train (and eval) file hold these rows; ``data`` edits its data section."""
    path = write_study(tmp_path, "data-check", 1, max_steps=2, eval_points=1)
    for split, rows in (("train", train_rows), ("eval", eval_rows)):
        if rows is not None:
            (tmp_path / "data" / f"{split}.jsonl").write_text(
                "".join(row if isinstance(row, str) else json.dumps(row) + "\n" for row in rows))
    raw = yaml.safe_load(path.read_text())
    raw["data"].update(data)
    raw["data"] = {k: v for k, v in raw["data"].items() if v is not None}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_study(str(path))


CASES = {
    "no-format": ({"train_rows": [{"question": "Hej?", "answer": "Hej!"}]},
                  "data.train: {train}: line 1 is in none of the formats chat (messages with an assistant turn), "
                  "sharegpt (conversations with from/value), alpaca (instruction/input/output) or text; its keys are "
                  "['answer', 'question']"),
    "mixed": ({"train_rows": [CHAT, ALPACA]}, "data.train: {train}: line 2 is alpaca but the rows are chat; "
                                              "use one format per file"),
    "eval-differs": ({"eval_rows": [ALPACA]}, "data.eval: {eval}: line 1 is alpaca but the rows are chat; "
                                              "use one format per file"),
    "not-json": ({"train_rows": [json.dumps(CHAT) + "\n", "{broken\n"]},
                 "data.train: {train}:2: not valid JSON (Expecting property name enclosed in double quotes)"),
    "empty-eval-split": ({"train_rows": [CHAT] * 5, "eval": None, "eval_fraction": 0.05},
                         "data.eval_fraction: 0.05 of 5 rows leaves an empty eval set; give a larger fraction or a "
                         "separate eval file"),
    "text-responses-only": ({"train_rows": [{"text": "Hej världen"}], "eval_rows": [{"text": "Hej"}],
                             "train_on_responses_only": True},
                            "data.train_on_responses_only: true needs chat or alpaca rows, the rows are text"),
}


@pytest.mark.parametrize("case", CASES)
def test_preflight_and_the_check_refuse_bad_data_in_the_same_words(tmp_path, case):
    edits, message = CASES[case]
    study = study_with(tmp_path, **edits)
    expected = message.format(train=study.config.data.train, eval=study.config.data.eval)
    with pytest.raises(RowError) as caught:
        check_data(study.config.data)
    assert f"{caught.value.key}: {caught.value}" == expected
    with pytest.raises(UserError) as refused:
        preflight(study)
    assert str(refused.value) == f"{study.path}: {expected}"


def test_good_data_gives_its_rows_split_as_the_study_says(tmp_path):
    study = study_with(tmp_path, train_rows=[CHAT] * 10, eval=None, eval_fraction=0.2)
    rows = check_data(study.config.data)
    assert (len(rows.train), len(rows.eval), rows.format) == (8, 2, "chat")


def test_a_saved_dataset_folder_is_checked_only_where_it_can_be_read(tmp_path):
    good, bad = tmp_path / "good", tmp_path / "bad"
    Dataset.from_list([CHAT] * 4).save_to_disk(str(good))
    Dataset.from_list([{"question": "Hej?", "answer": "Hej!"}]).save_to_disk(str(bad))
    study = study_with(tmp_path, eval=None, eval_fraction=0.5, train=str(bad))
    assert check_data(study.config.data) is None  # the orchestrator: no `datasets`, left to the trainer
    with pytest.raises(RowError, match="row 1 is in none of the formats"):
        check_data(study.config.data, reader=READER)
    study.config.data.train = str(good)
    assert check_data(study.config.data, reader=READER) == DataRows(train=[CHAT] * 2, eval=[CHAT] * 2,
                                                                               format="chat")


def test_a_trainer_on_bad_data_records_the_preflight_message(tmp_path):
    study = study_with(tmp_path, train_rows=[CHAT, ALPACA])
    with pytest.raises(UserError) as refused:
        preflight(study)
    c, out = study.config, tmp_path / "trial"
    out.mkdir()
    spec = TrialSpec(study="data-check", trial_number=0, model=c.model, data=c.data, output_dir=str(out),
                     lora=LoraSpec(**c.lora.model_dump(), r=4, lora_alpha=8),
                     training=TrainingSpec(**c.training.model_dump(), learning_rate=1e-2, num_train_epochs=1),
                     backend="transformers")
    spec.write(out / SPEC_FILE)
    result = run_trainer(out / SPEC_FILE, expect=2)[-1]
    assert (result["status"], f"{study.path}: {result['reason']}") == ("bad_input", str(refused.value))
