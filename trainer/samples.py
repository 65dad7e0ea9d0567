"""Sample answers to eval prompts, and their chrF against the references: a quality figure beside the loss.

After training, a trial answers the first ``samples.count`` eval prompts (greedy unless
``samples.temperature`` is set); each sample records the prompt, the reference answer from the
data and the model's answer; an answer ends where the chat template ends an assistant turn (its stop
word, also where it is not the tokenizer's end-of-sequence token). chrF (sacrebleu's ``CHRF``: character 6-grams, recall weighted
twice, 0 to 100) compares the answers with the references over all samples at once (corpus level),
so a trial that learned the task scores higher even where its eval loss is close to another's.
"""

from __future__ import annotations

from trainer.chat_data import stop_word
from trainer.spec import TrialSpec


def generate_samples(spec: TrialSpec, model, tokenizer, eval_rows, fmt, backend) -> list[dict[str, str]]:
    """Answers to the first ``samples.count`` eval prompts, generated in batches of the eval batch size."""
    if not spec.samples.count or fmt == "text":
        return []
    prompts, samples = sample_prompts(spec, tokenizer, eval_rows, fmt)
    model.eval()
    if backend == "unsloth":
        from unsloth import FastLanguageModel

        FastLanguageModel.for_inference(model)
    size = spec.training.per_device_eval_batch_size
    answers = []
    for start in range(0, len(prompts), size):
        answers += answer(spec, model, tokenizer, prompts[start:start + size])
    return [{**sample, "answer": text} for sample, text in zip(samples, answers, strict=True)]


def sample_prompts(spec: TrialSpec, tokenizer, eval_rows, fmt) -> tuple[list[str], list[dict[str, str]]]:
    """The first ``samples.count`` eval rows as generation prompts, and each one's sample without its answer."""
    from trainer.rows import as_messages

    prompts, samples = [], []
    for row in eval_rows[: spec.samples.count]:
        messages = as_messages(row, fmt)
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        prompts.append(tokenizer.apply_chat_template(messages[:last], tokenize=False, add_generation_prompt=True))
        samples.append({"prompt": messages[last - 1]["content"], "reference": messages[last]["content"]})
    return prompts, samples


def answer(spec: TrialSpec, model, tokenizer, prompts: list[str]) -> list[str]:
    """The model's answer to each prompt, generated as one left-padded batch and cut at the template's stop word."""
    import torch

    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # a batch of prompts must end where generation starts
    try:
        batch = tokenizer(prompts, add_special_tokens=False, padding=True, return_tensors="pt").to(model.device)
    finally:
        tokenizer.padding_side = side
    greedy = spec.samples.temperature == 0
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=spec.samples.max_new_tokens, do_sample=not greedy,
                             temperature=None if greedy else spec.samples.temperature,
                             pad_token_id=tokenizer.pad_token_id, **_stops(spec, model, tokenizer))
    start = batch["input_ids"].shape[1]
    stop = stop_word(spec.model.chat_template, tokenizer)
    texts = [tokenizer.decode(row[start:], skip_special_tokens=True) for row in out]
    return [(text.split(stop, 1)[0] if stop else text).strip() for text in texts]


def _stops(spec: TrialSpec, model, tokenizer) -> dict:
    """generate()'s arguments that end an answer at the template's stop word as well as at eos."""
    stop = stop_word(spec.model.chat_template, tokenizer)
    if stop is None:
        return {}
    ids = tokenizer(stop, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:  # not one token of this vocabulary: stop on the text
        return {"stop_strings": [stop], "tokenizer": tokenizer}
    eos = model.generation_config.eos_token_id
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    return {"eos_token_id": [*eos, *([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []), ids[0]]}


def chrf(samples: list[dict[str, str]]) -> float | None:
    """Corpus-level chrF (0 to 100) of the samples' answers against their references; None without samples."""
    if not samples:
        return None
    from sacrebleu.metrics import CHRF

    score = CHRF().corpus_score([s["answer"] for s in samples], [[s["reference"] for s in samples]])
    return round(score.score, 4)
