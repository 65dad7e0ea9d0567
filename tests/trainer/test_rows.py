"""Row formats: recognised, mixed formats refused, splits deterministic."""

from __future__ import annotations

import pytest

from trainer.rows import RowError, as_messages, check_format, read_jsonl, row_format, split_rows

CHAT = {"messages": [{"role": "user", "content": "Hej"}, {"role": "assistant", "content": "Hej!"}]}
ALPACA = {"instruction": "Säg hej", "input": "", "output": "Hej"}
TEXT = {"text": "Hej världen"}


@pytest.mark.parametrize("row,fmt", [(CHAT, "chat"), (ALPACA, "alpaca"), (TEXT, "text")])
def test_the_three_formats_are_recognised(row, fmt):
    assert row_format(row) == fmt


@pytest.mark.parametrize("row", [
    {"prompt": "x", "completion": "y"},
    {"messages": [{"role": "user", "content": "no answer"}]},
    {"messages": [{"role": "narrator", "content": "x"}, {"role": "assistant", "content": "y"}]},
    {"text": ""},
    ["not", "a", "dict"],
])
def test_rows_in_no_format_are_refused_with_their_keys(row):
    with pytest.raises(RowError, match="row 1 is in none of the formats"):
        check_format([row], "train.jsonl")


def test_mixed_formats_are_refused():
    with pytest.raises(RowError, match="row 2 is alpaca but the rows are chat"):
        check_format([CHAT, ALPACA], "train.jsonl")


def test_declared_format_must_match():
    with pytest.raises(RowError, match="row 1 is chat but the rows are text"):
        check_format([CHAT], "train.jsonl", declared="text")


def test_empty_file_is_refused():
    with pytest.raises(RowError, match="no rows"):
        check_format([], "eval.jsonl")


def test_invalid_json_names_file_and_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok"}\n{broken\n')
    with pytest.raises(RowError, match=r"d.jsonl:2: not valid JSON"):
        read_jsonl(path)


def test_alpaca_with_input_joins_instruction_and_input():
    row = {"instruction": "Översätt", "input": "röd", "output": "red"}
    assert as_messages(row, "alpaca") == [{"role": "user", "content": "Översätt\n\nröd"},
                                          {"role": "assistant", "content": "red"}]


def test_split_is_deterministic_and_disjoint():
    rows = [{"text": str(i)} for i in range(100)]
    train, evaluation = split_rows(rows, 0.1, seed=7)
    assert len(evaluation) == 10 and len(train) == 90
    assert split_rows(rows, 0.1, seed=7) == (train, evaluation)
    assert {r["text"] for r in train}.isdisjoint({r["text"] for r in evaluation})
    assert split_rows(rows, 0.1, seed=8)[1] != evaluation
