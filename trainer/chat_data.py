"""Turning rows into token ids and labels: chat template applied, non-assistant tokens masked.

Masking works for any chat template, with no ``{% generation %}`` markers needed: each assistant
turn's characters are found by rendering the conversation up to that turn with and without it,
and tokens that overlap such a span keep their label; all others get -100 (a token that straddles
the start of an answer, like `` S`` after ``Assistant:``, belongs to the answer). Templates that
render a shorter conversation as other than a prefix of the longer one (Qwen-3's and gpt-oss's drop
earlier turns' reasoning) are refused for response-only loss with a :class:`TemplateError`.
The result is a pre-tokenized dataset (``input_ids``, ``labels``) that TRL's SFTTrainer uses as is.
"""

from __future__ import annotations

from trainer import chat_templates
from trainer.rows import as_messages

IGNORE = -100


class TemplateError(ValueError):
    """The tokenizer's chat template cannot be used for this data."""


def set_chat_template(tokenizer, which: str, needs_template: bool) -> None:
    """Apply the study's choice of chat template; fail clearly if chat data meets a tokenizer without one.

    ``which`` is ``model`` (keep the tokenizer's own) or a name of :mod:`trainer.chat_templates`.
    """
    if which != chat_templates.OWN:
        tokenizer.chat_template = chat_templates.template_for(which, tokenizer).template
    elif needs_template and not getattr(tokenizer, "chat_template", None):
        raise TemplateError(
            "the tokenizer has no chat template, but the data is chat: set model.chat_template: llama-3 (or "
            "another of Unsloth's template names, e.g. chatml) in the study file, or use a tokenizer that has one"
        )
    ensure_pad_token(tokenizer)


def ensure_pad_token(tokenizer) -> None:
    """Give a tokenizer without a pad token one: Llama-3's reserved pad where it has it, else its eos token."""
    if tokenizer.pad_token is None:
        pad = "<|finetune_right_pad_id|>"
        tokenizer.pad_token = pad if pad in tokenizer.get_vocab() else tokenizer.eos_token


def stop_word(which: str, tokenizer) -> str | None:
    """The text that ends an assistant turn of template ``which`` when it is not the tokenizer's own eos token
    (generation should stop there too), else None."""
    if which == chat_templates.OWN:
        return None
    stop = chat_templates.template_for(which, tokenizer).stop
    return None if stop in (chat_templates.EOS_TOKEN, tokenizer.eos_token) else stop


def _render(tokenizer, messages, add_generation_prompt=False) -> str:
    from jinja2 import TemplateError as JinjaError

    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except JinjaError as e:  # the template's raise_exception: e.g. a role it does not take
        raise TemplateError(f"the chat template cannot render this conversation: {e}") from None


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
            raise TemplateError("the chat template does not render a conversation as a prefix of its continuation "
                                "(it rewrites earlier turns), so the assistant turns cannot be found; choose "
                                "another model.chat_template or set data.train_on_responses_only: false")
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
        tok if any(begin < stop and finish > start for start, stop in spans) else IGNORE
        for tok, (begin, finish) in zip(ids, enc["offset_mapping"], strict=True)
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
            texts = [_numbered(_render, start + i, tokenizer, as_messages(row, fmt)) for i, row in enumerate(chunk)]
            lengths += [len(i) for i in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    return lengths


def check_turns(tokenizer, rows: list[dict], fmt: str) -> None:
    """Raise :class:`TemplateError` naming the first row whose assistant turns the template does not let
    :func:`assistant_spans` find (what response-only loss needs)."""
    for index, row in enumerate(rows):
        _numbered(assistant_spans, index, tokenizer, as_messages(row, fmt))


def _numbered(function, index: int, *args):
    try:
        return function(*args)
    except TemplateError as e:
        raise TemplateError(f"row {index + 1}: {e}") from None


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
