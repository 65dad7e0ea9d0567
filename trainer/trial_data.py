"""A trial's data, from the study's files to the tokenised datasets its Trainer takes.

The rows are read and checked by :func:`trainer.data_check.check_data` (the orchestrator's
pre-flight check runs the same function, so both refuse the same data with the same words; here
``datasets`` reads the saved folders and hub datasets, :class:`DatasetsReader`), then
encoded with the chat template and response-only labels (:mod:`trainer.chat_data`), through the
study's cache of encoded datasets when the spec names one (:mod:`trainer.data_cache`).
"""

from __future__ import annotations

from pathlib import Path

from trainer.data_check import check_data
from trainer.hub_data import CachedDataset, load_split
from trainer.spec import TrialSpec


class DatasetsReader:
    """The :class:`trainer.data_check.Reader` of trainers and the tokenizer check: reads with ``datasets``."""

    def folder(self, path: str) -> list[dict]:
        """The rows of a folder saved with ``datasets``' ``save_to_disk``."""
        from datasets import load_from_disk

        return load_from_disk(path).to_list()

    def hub(self, cached: CachedDataset, subset: str | None, split: str, split_key: str) -> list[dict]:
        """The rows of one split of a hub dataset in this host's cache."""
        return load_split(cached, subset, split, split_key).to_list()


READER = DatasetsReader()


def load_rows(spec: TrialSpec) -> tuple[list[dict], list[dict], str]:
    """Train and eval rows and their shared format; raises RowError for data the trial cannot use."""
    rows = check_data(spec.data, reader=READER)
    return rows.train, rows.eval, rows.format


def encode(spec: TrialSpec, tokenizer, train_rows: list[dict], eval_rows: list[dict], fmt: str):
    """The train and eval datasets (``input_ids``, ``labels``), from the cache when it holds them."""
    from datasets import Dataset

    from trainer.chat_data import encode_rows, set_chat_template

    set_chat_template(tokenizer, spec.model.chat_template, needs_template=fmt != "text")
    key = None
    if spec.cache_dir:
        from trainer import data_cache

        key = data_cache.cache_key(spec, tokenizer)
        cached = data_cache.load(Path(spec.cache_dir), key)
        if cached is not None:
            return cached
    responses_only = spec.data.train_on_responses_only
    if responses_only is None:
        responses_only = fmt != "text"
    max_len = spec.model.max_seq_length
    train = encode_rows(tokenizer, train_rows, fmt, responses_only, max_len)
    evaluation = encode_rows(tokenizer, eval_rows, fmt, responses_only, max_len)
    if not train or not evaluation:
        from trainer.run_trial import BadInput  # the trainer's, imported by now: a model limit, not a row's fault

        raise BadInput("no row keeps an assistant token within model.max_seq_length")
    train_ds, eval_ds = Dataset.from_list(train), Dataset.from_list(evaluation)
    if key is not None:
        data_cache.store(Path(spec.cache_dir), key, train_ds, eval_ds)
    return train_ds, eval_ds
