"""The rows-against-tokenizer check: its answer is kept once the study exists and read again while the
inputs stay the same; a changed data file is checked afresh."""

from __future__ import annotations

import os

import pytest

from sweep.checks.token_check import check_rows_fit
from sweep.errors import UserError
from sweep.schema.study_file import load_study
from tests.sweep.live_study import write_study
from trainer.row_lengths import LengthReport


def test_the_answer_is_kept_after_the_study_exists_and_read_while_inputs_stay(tmp_path):
    study = load_study(str(write_study(tmp_path, "kept", 2)))
    folder = tmp_path / "runs" / "kept"
    record = check_rows_fit(study, folder)
    assert not folder.exists()  # nothing written before the study exists
    record()
    (kept,) = (folder / "cache").glob("row-lengths-*.json")
    report = LengthReport.model_validate_json(kept.read_text())
    assert [(s.key, s.rows, s.over) for s in report.splits] == [("data.train", 96, 0), ("data.eval", 16, 0)]

    # the kept answer is what a later run reads: a problem written into it is reported, no subprocess asked
    kept.write_text(report.model_copy(update={"key": "model.chat_template", "problem": "kept"}).model_dump_json())
    with pytest.raises(UserError, match=r"model.chat_template: kept$"):
        check_rows_fit(study, folder)

    train = tmp_path / "data" / "train.jsonl"
    os.utime(train, ns=(train.stat().st_atime_ns, train.stat().st_mtime_ns + 10**9))  # the data changed
    check_rows_fit(study, folder)()
    assert len(list((folder / "cache").glob("row-lengths-*.json"))) == 2


def test_a_template_that_hides_the_assistant_turns_is_refused_before_the_study(tmp_path):
    path = write_study(tmp_path, "qwen", 2)
    path.write_text(path.read_text().replace("chat_template: llama-3", "chat_template: qwen3"))
    study = load_study(str(path))
    with pytest.raises(UserError) as refused:  # qwen3 drops earlier turns' reasoning: no prefix renders
        check_rows_fit(study, tmp_path / "runs" / "qwen")
    assert str(refused.value).startswith(f"{path}: model.chat_template: 'qwen3' on data.train: row ")
    assert "does not render a conversation as a prefix" in str(refused.value)
    path.write_text(path.read_text().replace("data:\n", "data:\n  train_on_responses_only: false\n"))
    check_rows_fit(load_study(str(path)), tmp_path / "runs" / "qwen")  # every token counts: nothing to find
