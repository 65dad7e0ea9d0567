"""Unsloth's named chat templates: applied to the rows, assistant turns masked, unknown names refused."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.sweep.live_study import TINY_MODEL
from trainer import chat_templates
from trainer.chat_data import IGNORE, TemplateError, encode_rows, set_chat_template, stop_word
from trainer.spec import ModelSpec

CHAT = {"messages": [
    {"role": "system", "content": "Du är hjälpsam."},
    {"role": "user", "content": "Vad är huvudstaden i Norge?"},
    {"role": "assistant", "content": "Oslo."},
    {"role": "user", "content": "Och i Sverige?"},
    {"role": "assistant", "content": "Stockholm."},
]}
# templates that render earlier turns differently once a later turn follows (reasoning dropped), so
# the assistant turns of a longer conversation cannot be found by rendering its prefixes
REWRITE_EARLIER_TURNS = {"qwen-3", "qwen3", "qwen3-thinking", "gemma-4-thinking", "gemma4-thinking", "gpt-oss",
                         "gptoss"}


def tiny_tokenizer(template: str):
    tokenizer = AutoTokenizer.from_pretrained(TINY_MODEL)
    set_chat_template(tokenizer, template, needs_template=True)
    return tokenizer


def labelled(tokenizer, item) -> str:
    return tokenizer.decode([t for t, label in zip(item["input_ids"], item["labels"], strict=True) if label != IGNORE])


def test_chatml_rows_are_rendered_as_chatml_and_only_answers_count():
    tokenizer = tiny_tokenizer("chatml")
    (item,) = encode_rows(tokenizer, [CHAT], "chat", responses_only=True, max_len=512)
    assert tokenizer.decode(item["input_ids"]) == (
        "<|im_start|>system\nDu är hjälpsam.<|im_end|>\n<|im_start|>user\nVad är huvudstaden i Norge?<|im_end|>\n"
        "<|im_start|>assistant\nOslo.<|im_end|>\n<|im_start|>user\nOch i Sverige?<|im_end|>\n"
        "<|im_start|>assistant\nStockholm.<|im_end|>\n")
    assert labelled(tokenizer, item) == "Oslo.<|im_end|>\nStockholm.<|im_end|>\n"


def test_llama31_rows_carry_its_system_header_and_only_answers_count():
    tokenizer = tiny_tokenizer("llama-3.1")
    (item,) = encode_rows(tokenizer, [CHAT], "chat", responses_only=True, max_len=512)
    text = tokenizer.decode(item["input_ids"])
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: "
                           "December 2023\nToday Date: 26 July 2024\n\nDu är hjälpsam.<|eot_id|>")
    assert "<|start_header_id|>assistant<|end_header_id|>\n\nStockholm.<|eot_id|>" in text
    assert labelled(tokenizer, item) == "Oslo.<|eot_id|>Stockholm.<|eot_id|>"


@pytest.mark.parametrize("name", chat_templates.names()[1:])
def test_every_unsloth_template_masks_all_but_the_answers(name):
    tokenizer = tiny_tokenizer(name)
    one_turn = {"messages": CHAT["messages"][1:3]}
    if name in ("gemma-4-thinking", "gemma4-thinking"):  # renders an answer apart from its prompt
        with pytest.raises(TemplateError, match="not render a conversation as a prefix"):
            encode_rows(tokenizer, [one_turn], "chat", responses_only=True, max_len=1024)
        return
    (item,) = encode_rows(tokenizer, [one_turn], "chat", responses_only=True, max_len=1024)
    answer = labelled(tokenizer, item)
    assert "Oslo." in answer and "Norge" not in answer
    if name in REWRITE_EARLIER_TURNS:
        with pytest.raises(TemplateError, match="data.train_on_responses_only: false"):
            encode_rows(tokenizer, [CHAT], "chat", responses_only=True, max_len=1024)
        return
    (item,) = encode_rows(tokenizer, [CHAT], "chat", responses_only=True, max_len=1024)
    answers = labelled(tokenizer, item)
    assert "Oslo." in answers and "Stockholm." in answers
    assert not any(text in answers for text in ("Norge", "Sverige", "hjälpsam"))


def test_a_role_the_template_refuses_is_a_template_error_naming_the_row():
    from trainer.chat_data import token_lengths

    tokenizer = tiny_tokenizer("mistral")  # user and assistant only, after an optional first system turn
    odd = {"messages": [{"role": "user", "content": "Hej"}, {"role": "tool", "content": "{}"},
                        {"role": "assistant", "content": "Hej!"}]}
    with pytest.raises(TemplateError, match="row 2: .*Only user and assistant roles are supported"):
        token_lengths(tokenizer, [CHAT, odd], "chat")


@pytest.mark.parametrize(("given", "suggested"), [("chatlm", "chatml"), ("Llama-3.1", "llama-3.1"),
                                                  ("phi3", "phi-3")])
def test_unknown_template_names_get_a_suggestion_and_the_names(given, suggested):
    with pytest.raises(ValidationError) as error:
        ModelSpec(name_or_path="m", chat_template=given)
    message = str(error.value)
    assert f"unknown chat template (did you mean {suggested!r}?); allowed: model (the tokenizer's own), " in message
    assert "chatml" in message and "phi-3" in message


def test_stop_word_is_the_template_end_of_turn_unless_it_is_the_eos_token():
    tokenizer = AutoTokenizer.from_pretrained(TINY_MODEL)
    assert stop_word("model", tokenizer) is None
    assert stop_word("llama-3", tokenizer) is None  # Unsloth's "eos_token"
    assert stop_word("chatml", tokenizer) == "<|im_end|>"
    assert stop_word("phi-3", tokenizer) == "<|end|>"


def test_samples_end_at_the_template_stop_word(tmp_path):
    from trainer.samples import _stops, generate_samples
    from trainer.spec import TrialSpec

    spec = TrialSpec.model_validate({
        "study": "s", "trial_number": 0, "output_dir": str(tmp_path),
        "model": {"name_or_path": str(TINY_MODEL), "chat_template": "chatml"},
        "data": {"train": "t.jsonl", "eval_fraction": 0.5},
        "lora": {"r": 4, "lora_alpha": 4}, "training": {"learning_rate": 1e-3, "num_train_epochs": 1},
        "samples": {"count": 2, "max_new_tokens": 6},
    })
    tokenizer = tiny_tokenizer("chatml")
    model = AutoModelForCausalLM.from_pretrained(TINY_MODEL)
    # not one token of this vocabulary: generation stops on the text
    assert _stops(spec, model, tokenizer) == {"stop_strings": ["<|im_end|>"], "tokenizer": tokenizer}
    samples = generate_samples(spec, model, tokenizer, [CHAT, CHAT], "chat", "transformers")
    assert [s["reference"] for s in samples] == ["Stockholm.", "Stockholm."]
    assert all("<|im_end|>" not in s["answer"] for s in samples)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_end|>"]})  # one token: a further eos id
    stop_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert _stops(spec, model, tokenizer)["eos_token_id"][-1] == stop_id


def test_snapshot_names_are_unique_and_each_names_one_template():
    snapshot = json.loads(chat_templates.SNAPSHOT.read_text(encoding="utf-8"))
    all_names = [name for entry in snapshot["templates"] for name in entry["names"]]
    assert len(all_names) == len(set(all_names)) and chat_templates.OWN not in all_names
    assert {"chatml", "llama-3", "llama-3.1", "mistral", "gemma", "phi-3", "qwen-2.5"} <= set(all_names)


@pytest.mark.skipif(importlib.util.find_spec("unsloth") is None, reason="Unsloth is not installed (the gpu extra)")
def test_snapshot_is_what_the_installed_unsloth_names():
    package = Path(next(iter(importlib.util.find_spec("unsloth").submodule_search_locations)))
    entries = chat_templates.from_unsloth(chat_templates.load_unsloth_module(package))
    snapshot = json.loads(chat_templates.SNAPSHOT.read_text(encoding="utf-8"))["templates"]
    assert entries == snapshot, "refresh it: python -m trainer.chat_templates"


def test_snapshot_comes_from_the_unsloth_the_gpu_extra_pins():
    import tomllib

    extra = tomllib.loads((chat_templates.SNAPSHOT.parents[1] / "pyproject.toml").read_text())
    (pin,) = [r for r in extra["project"]["optional-dependencies"]["gpu"] if r.startswith("unsloth==")]
    source = json.loads(chat_templates.SNAPSHOT.read_text(encoding="utf-8"))["source"]
    assert source.startswith(f"unsloth {pin.removeprefix('unsloth==')},"), "refresh it: python -m trainer.chat_templates"
