"""Row formats: recognised, mixed formats refused, splits deterministic."""

from __future__ import annotations

import json

import pytest

from trainer.rows import (
    RowError,
    as_messages,
    check_format,
    read_jsonl,
    read_numbered_jsonl,
    row_format,
    split_rows,
)

CHAT = {"messages": [{"role": "user", "content": "Hej"}, {"role": "assistant", "content": "Hej!"}]}
ALPACA = {"instruction": "Säg hej", "input": "", "output": "Hej"}
TEXT = {"text": "Hej världen"}


@pytest.mark.parametrize("row,fmt", [(CHAT, "chat"), (ALPACA, "alpaca"), (TEXT, "text")])
def test_the_three_formats_are_recognised(row, fmt):
    assert row_format(row) == fmt


@pytest.mark.parametrize("row,why", [
    ({"prompt": "x", "completion": "y"}, "row 1 is in none of the formats .* its keys are \\['completion', 'prompt'\\]"),
    ({"messages": [{"role": "user", "content": "no answer"}]}, "row 1: messages has no assistant turn"),
    ({"messages": [{"role": "narrator", "content": "x"}, {"role": "assistant", "content": "y"}]},
     "row 1: messages\\[0\\].role 'narrator' is not allowed; allowed: assistant, system, tool, user"),
    ({"messages": [{"role": "user", "content": ["x"]}, {"role": "assistant", "content": "y"}]},
     "row 1: messages\\[0\\].content is list, not a string"),
    ({"text": ""}, "row 1: text is empty"),
    (["not", "a", "dict"], "row 1 is in none of the formats .* its keys are list"),
])
def test_rows_in_no_format_are_refused_saying_why(row, why):
    with pytest.raises(RowError, match=why):
        check_format([row], "train.jsonl")


def test_a_row_is_named_by_its_line_in_the_file(tmp_path):
    path = tmp_path / "d.jsonl"
    lines = [json.dumps(CHAT), "", json.dumps({"messages": [{"role": "human", "content": "x"}]})]
    path.write_text("\n".join(lines) + "\n")
    rows, numbers = read_numbered_jsonl(path)
    assert numbers == [1, 3]
    with pytest.raises(RowError, match="d.jsonl: line 3: messages\\[0\\].role 'human' is not allowed"):
        check_format(rows, str(path), lines=numbers)


@pytest.mark.parametrize("content,why", [
    ("\n".join([json.dumps(TEXT)] * 2).encode("utf-16"), "UTF-16 text, not UTF-8"),
    ("\n".join([json.dumps(TEXT)] * 2).encode("utf-16-le"), ":1: NUL bytes"),
    (json.dumps(TEXT).encode() + b"\n" + json.dumps({"text": "hej"}).encode("latin-1").replace(b"hej", b"h\xe4j"),
     ":2: not UTF-8 text \\(byte 0xe4 at column 12\\)"),
    (bytes(range(256)), ":1: NUL bytes"),
])
def test_a_file_that_is_not_utf8_text_names_the_line(tmp_path, content, why):
    path = tmp_path / "d.jsonl"
    path.write_bytes(content)
    with pytest.raises(RowError, match=why):
        read_jsonl(path)


def test_a_utf8_byte_order_mark_is_allowed(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(TEXT).encode() + b"\n")
    assert read_jsonl(path) == [TEXT]


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


SHAREGPT = {"conversations": [{"from": "system", "value": "Svara kort."}, {"from": "human", "value": "Hej!"},
                              {"from": "gpt", "value": "Hej, hur mår du?"}]}


def test_sharegpt_rows_become_the_same_conversation_as_chat_rows():
    assert check_format([SHAREGPT], "t.jsonl") == "sharegpt"
    assert as_messages(SHAREGPT, "sharegpt") == [{"role": "system", "content": "Svara kort."},
                                                 {"role": "user", "content": "Hej!"},
                                                 {"role": "assistant", "content": "Hej, hur mår du?"}]


def test_a_sharegpt_speaker_that_is_not_known_is_named():
    row = {"conversations": [{"from": "human", "value": "Hej"}, {"from": "bot", "value": "Hej"}]}
    with pytest.raises(RowError, match=r"line 1: conversations\[1\]\.from 'bot' is not allowed; allowed: .*gpt"):
        check_format([row], "t.jsonl", lines=[1])


def test_sharegpt_rows_encode_to_the_tokens_of_the_same_chat_rows():
    from transformers import AutoTokenizer

    from tests.sweep.live_study import TINY_MODEL
    from trainer.chat_data import encode_rows, set_chat_template

    tokenizer = AutoTokenizer.from_pretrained(TINY_MODEL)
    set_chat_template(tokenizer, "llama-3", needs_template=True)
    chat = {"messages": as_messages(SHAREGPT, "sharegpt")}
    assert encode_rows(tokenizer, [SHAREGPT], "sharegpt", True, 128) == encode_rows(tokenizer, [chat], "chat", True, 128)
