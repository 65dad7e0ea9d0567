"""Chat template and response-only masking on the shipped tiny tokenizer."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from tests.sweep.live_study import TINY_MODEL
from trainer.chat_data import IGNORE, TemplateError, encode_rows, set_chat_template
from trainer.chat_templates import templates

CHAT = {"messages": [
    {"role": "system", "content": "Du är hjälpsam."},
    {"role": "user", "content": "Vad är huvudstaden i Norge?"},
    {"role": "assistant", "content": "Huvudstaden i Norge är Oslo."},
    {"role": "user", "content": "Och i Sverige?"},
    {"role": "assistant", "content": "Stockholm."},
]}


@pytest.fixture
def tokenizer():
    tok = AutoTokenizer.from_pretrained(TINY_MODEL)
    set_chat_template(tok, "llama-3", needs_template=True)
    return tok


def labelled_text(tokenizer, item) -> str:
    return tokenizer.decode([t for t, label in zip(item["input_ids"], item["labels"], strict=True) if label != IGNORE])


def test_llama3_format_is_rendered(tokenizer):
    text = tokenizer.apply_chat_template(CHAT["messages"][:2], tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nDu är hjälpsam.<|eot_id|>")
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_only_assistant_turns_are_in_the_loss(tokenizer):
    (item,) = encode_rows(tokenizer, [CHAT], "chat", responses_only=True, max_len=256)
    assert labelled_text(tokenizer, item) == "Huvudstaden i Norge är Oslo.<|eot_id|>Stockholm.<|eot_id|>"
    assert len(item["labels"]) == len(item["input_ids"])


def test_without_masking_every_token_counts(tokenizer):
    (item,) = encode_rows(tokenizer, [CHAT], "chat", responses_only=False, max_len=256)
    assert item["labels"] == item["input_ids"]


def test_alpaca_rows_become_a_user_assistant_turn(tokenizer):
    row = {"instruction": "Översätt till engelska.", "input": "röd", "output": "red"}
    (item,) = encode_rows(tokenizer, [row], "alpaca", responses_only=True, max_len=256)
    assert labelled_text(tokenizer, item) == "red<|eot_id|>"
    assert "Översätt till engelska.\n\nröd" in tokenizer.decode(item["input_ids"])


def test_text_rows_end_with_eos_and_count_whole(tokenizer):
    (item,) = encode_rows(tokenizer, [{"text": "Hej världen"}], "text", responses_only=False, max_len=256)
    assert item["input_ids"][-1] == tokenizer.eos_token_id and item["labels"] == item["input_ids"]


def test_truncation_drops_rows_with_no_assistant_token_left(tokenizer):
    long_prompt = {"messages": [{"role": "user", "content": "ord " * 200}, {"role": "assistant", "content": "ja"}]}
    short = {"messages": [{"role": "user", "content": "Hej"}, {"role": "assistant", "content": "Hej!"}]}
    kept = encode_rows(tokenizer, [long_prompt, short], "chat", responses_only=True, max_len=32)
    assert len(kept) == 1 and all(len(item["input_ids"]) <= 32 for item in kept)
    assert labelled_text(tokenizer, kept[0]) == "Hej!<|eot_id|>"


def test_tokenizer_without_template_and_chat_data_is_a_clear_error():
    tok = AutoTokenizer.from_pretrained(TINY_MODEL)
    tok.chat_template = None
    with pytest.raises(TemplateError, match="no chat template.*chat_template: llama-3"):
        set_chat_template(tok, "model", needs_template=True)


def test_shipped_tokenizer_template_matches_the_llama3_template():
    tok = AutoTokenizer.from_pretrained(TINY_MODEL)
    messages = CHAT["messages"]
    ours = tok.apply_chat_template(messages, tokenize=False, chat_template=templates()["llama-3"].template)
    assert tok.apply_chat_template(messages, tokenize=False) == ours
