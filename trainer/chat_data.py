"""Turning rows into token ids and labels: chat template applied, non-assistant tokens masked.

Masking works for any chat template, with no ``{% generation %}`` markers needed: each assistant
turn's characters are found by rendering the conversation up to that turn with and without it,
and tokens whose first character falls inside such a span keep their label; all others get -100.
The result is a pre-tokenized dataset (``input_ids``, ``labels``) that TRL's SFTTrainer uses as is.
"""

from __future__ import annotations

from trainer.rows import as_messages

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] | trim }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
IGNORE = -100


class TemplateError(ValueError):
    """The tokenizer's chat template cannot be used for this data."""


def set_chat_template(tokenizer, which: str, needs_template: bool) -> None:
    """Apply the study's choice of chat template; fail clearly if chat data meets a tokenizer without one."""
    if which == "llama-3":
        tokenizer.chat_template = LLAMA3_TEMPLATE
    elif needs_template and not getattr(tokenizer, "chat_template", None):
        raise TemplateError(
            "the tokenizer has no chat template, but the data is chat: set model.chat_template: llama-3 "
            "in the study file, or use a tokenizer that has one"
        )
    if tokenizer.pad_token is None:
        pad = "<|finetune_right_pad_id|>"
        tokenizer.pad_token = pad if pad in tokenizer.get_vocab() else tokenizer.eos_token


def _render(tokenizer, messages, add_generation_prompt=False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def assistant_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant turns."""
    text = _render(tokenizer, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], add_generation_prompt=True) if i else ""
        upto = _render(tokenizer, messages[: i + 1])
        if not upto.startswith(before) or not text.startswith(upto):
            raise TemplateError("the chat template does not render a conversation as a prefix of its continuation")
        spans.append((len(before), len(upto)))
    return text, spans


def encode_messages(tokenizer, messages: list[dict], responses_only: bool, max_len: int) -> dict:
    """Token ids and labels of one conversation, truncated to ``max_len`` tokens."""
    text, spans = assistant_spans(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=True, max_length=max_len)
    ids = enc["input_ids"]
    if not responses_only:
        return {"input_ids": ids, "labels": list(ids)}
    labels = [
        tok if any(start <= begin < end for start, end in spans) else IGNORE
        for tok, (begin, _) in zip(ids, enc["offset_mapping"], strict=True)
    ]
    return {"input_ids": ids, "labels": labels}


def encode_text(tokenizer, text: str, max_len: int) -> dict:
    """Token ids and labels of a plain-text row (every token counts), ending with EOS."""
    ids = tokenizer(text, add_special_tokens=True, truncation=True, max_length=max_len - 1)["input_ids"]
    ids = ids + [tokenizer.eos_token_id]
    return {"input_ids": ids, "labels": list(ids)}


def token_lengths(tokenizer, rows: list[dict], fmt: str, batch: int = 256) -> list[int]:
    """Each row's length in tokens as :func:`encode_rows` encodes it, before truncation to ``max_len``."""
    lengths = []
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        if fmt == "text":  # encode_text: the tokenizer's special tokens, then EOS
            ids = tokenizer([row["text"] for row in chunk], add_special_tokens=True)["input_ids"]
            lengths += [len(i) + 1 for i in ids]
        else:
            texts = [_render(tokenizer, as_messages(row, fmt)) for row in chunk]
            lengths += [len(i) for i in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    return lengths


def encode_rows(tokenizer, rows: list[dict], fmt: str, responses_only: bool, max_len: int) -> list[dict]:
    """Encode every row; rows left with no token in the loss (all truncated away) are dropped."""
    encoded = []
    for row in rows:
        if fmt == "text":
            item = encode_text(tokenizer, row["text"], max_len)
        else:
            item = encode_messages(tokenizer, as_messages(row, fmt), responses_only, max_len)
        if any(label != IGNORE for label in item["labels"]):
            encoded.append(item)
    return encoded
