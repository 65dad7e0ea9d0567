"""The rows of a study against its tokenizer, checked before the study is created: ``python -m trainer.row_lengths``.

The orchestrator never imports transformers, so it cannot count tokens. Before it creates a study
it runs this module in a subprocess with the study's ``model`` and ``data`` sections (a
:class:`LengthCheck` as JSON on stdin). Loading only the tokenizer and the model's config, it reads
the rows as a trial does, through :func:`trainer.data_check.check_data` (JSONL files, ``datasets``
folders and cached hub datasets, the ``eval_fraction`` split), applies the study's chat template as a trial does, and counts each row's tokens
(:func:`trainer.chat_data.token_lengths`). The answer, a :class:`LengthReport`, is the one line
this module prints on stdout (everything else it or the libraries print goes to stderr): per split,
the rows, how many are longer than ``model.max_seq_length`` and the longest; or the key and the
problem of an input no trial could use (a model that is not a causal LM, a tokenizer without a
chat template for chat rows, a template that cannot render a row or, for response-only loss, lets
its assistant turns not be found, rows in no known format, 4-bit loading on a host without a GPU).

Example::

    echo '{"model": {...}, "data": {...}}' | python -m trainer.row_lengths
"""

from __future__ import annotations

import sys
from typing import Literal

from pydantic import Field

from trainer.spec import DataSpec, ModelSpec, Strict


class LengthCheck(Strict):
    """What the orchestrator asks about: the study's model and data sections, paths resolved."""

    model: ModelSpec
    data: DataSpec


class SplitLengths(Strict):
    """Token lengths of one split's rows."""

    key: Literal["data.train", "data.eval"] = Field(description="The split, as the study file's key.")
    rows: int = Field(ge=0, description="Rows in the split.")
    over: int = Field(ge=0, description="Rows longer than model.max_seq_length tokens (a trial cuts them).")
    longest: int = Field(ge=0, description="Tokens of the longest row.")
    shortest: int = Field(ge=0, description="Tokens of the shortest row.")


class LengthReport(Strict):
    """The answer: the splits' lengths, or the study file key and problem of an unusable input."""

    splits: list[SplitLengths] = Field(default_factory=list, description="Train, then eval.")
    key: str | None = Field(None, description="The study file key of the problem, e.g. model.chat_template.")
    problem: str | None = Field(None, description="Why no trial could use the input, one line.")


class Unusable(ValueError):
    """An input no trial could use; ``key`` is its study file key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key = key


def measure(check: LengthCheck) -> LengthReport:
    """Read the rows and the tokenizer as a trial does and count the tokens of every row."""
    from trainer.chat_data import TemplateError, check_turns, set_chat_template, token_lengths
    from trainer.data_check import check_data
    from trainer.rows import RowError
    from trainer.trial_data import READER

    tokenizer = _load_tokenizer(check.model)
    try:
        rows = check_data(check.data, reader=READER)
        train, evaluation, fmt = rows.train, rows.eval, rows.format
    except RowError as e:
        raise Unusable(e.key, str(e)) from None
    try:
        set_chat_template(tokenizer, check.model.chat_template, needs_template=fmt != "text")
    except TemplateError as e:
        raise Unusable("model.chat_template", f"{check.model.chat_template!r} is not allowed here: {e}") from None
    responses_only = check.data.train_on_responses_only
    responses_only = fmt != "text" if responses_only is None else responses_only
    splits = []
    for key, rows in (("data.train", train), ("data.eval", evaluation)):
        try:
            lengths = token_lengths(tokenizer, rows, fmt)
            if responses_only:
                check_turns(tokenizer, rows, fmt)
        except TemplateError as e:
            raise Unusable("model.chat_template", f"{check.model.chat_template!r} on {key}: {e}") from None
        splits.append(SplitLengths(key=key, rows=len(rows), longest=max(lengths), shortest=min(lengths),
                                   over=sum(n > check.model.max_seq_length for n in lengths)))
    return LengthReport(splits=splits)


def _load_tokenizer(model: ModelSpec):
    import torch
    from transformers import AutoConfig, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    name = model.name_or_path
    if model.load_in_4bit and not torch.cuda.is_available():
        raise Unusable("model.load_in_4bit", "true needs a GPU (bitsandbytes) and this host has none; set it to false")
    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError, KeyError) as e:
        raise Unusable("model.name_or_path", f"{name!r}: cannot read its config: {_first_line(e)}") from None
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise Unusable("model.name_or_path", f"{name!r} is a {config.model_type!r} model, which is not a causal "
                                             "language model (transformers has no AutoModelForCausalLM class for it)")
    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise Unusable("model.name_or_path", f"{name!r}: cannot load its tokenizer: {_first_line(e)}") from None


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def main() -> int:
    check = LengthCheck.model_validate_json(sys.stdin.read())
    answer, sys.stdout = sys.stdout, sys.stderr  # only the report goes to stdout
    try:
        report = measure(check)
    except Unusable as e:
        report = LengthReport(key=e.key, problem=str(e))
    answer.write(report.model_dump_json() + "\n")
    answer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
