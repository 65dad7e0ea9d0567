"""A trial's micro-batches in the order the transformers Trainer would give them, and their stacking.

The Trainer (through accelerate's seedable sampler) shuffles each epoch with
``torch.randperm(n, generator=manual_seed(seed + epoch))``, cuts the order into micro-batches
(the last one may be short), groups ``gradient_accumulation_steps`` of them per optimizer step
(the last window of an epoch may be short) and divides each micro-batch's summed token loss by the
label tokens of its whole window. :class:`TrainOrder` reproduces that, so a trial trained in a
group sees exactly the batches it would see alone, and can start again at any step.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

IGNORE = -100


@dataclass(frozen=True)
class MicroBatch:
    """One trial's rows for one forward, right-padded to their longest row."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    items: int  # label tokens of the whole optimizer step (the loss of this micro-batch divides by it)
    tokens: int  # real (unpadded) tokens, for throughput
    last: bool  # the optimizer steps after this micro-batch
    step: int  # the optimizer step (1-based) this micro-batch belongs to
    epoch: float  # epochs done once this optimizer step is done

    @property
    def rows(self) -> int:
        return self.input_ids.shape[0]

    @property
    def length(self) -> int:
        return self.input_ids.shape[1]


def collate(items: list[dict], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``input_ids``, ``attention_mask``, ``labels`` of rows padded on the right (TRL's collator)."""
    lengths = torch.tensor([len(item["input_ids"]) for item in items])
    mask = (torch.arange(int(lengths.max())) < lengths[:, None]).long()
    ids = torch.full(mask.shape, pad_id, dtype=torch.long)
    labels = torch.full(mask.shape, IGNORE, dtype=torch.long)
    real = mask.bool()  # row by row, as the rows' tokens follow each other below
    ids[real] = torch.tensor([token for item in items for token in item["input_ids"]], dtype=torch.long)
    labels[real] = torch.tensor([label for item in items for label in item["labels"]], dtype=torch.long)
    return ids, mask, labels


def predicted_labels(item: dict) -> int:
    """Label tokens a causal LM predicts in a row (the first position has no prediction)."""
    return sum(1 for label in item["labels"][1:] if label != IGNORE)


class TrainOrder:
    """The micro-batches of one trial, epoch by epoch, as the Trainer orders and windows them."""

    def __init__(self, rows: list[dict], batch_size: int, accumulation: int, epochs: int, max_steps: int | None,
                 seed: int, pad_id: int, predicted: list[int] | None = None) -> None:
        """``predicted``: each row's :func:`predicted_labels`, where the caller has them (members sharing rows)."""
        if not rows:
            raise ValueError("a trial needs at least one training row")
        self.rows, self.batch_size, self.accumulation = rows, batch_size, accumulation
        self.seed, self.pad_id = seed, pad_id
        self.predicted = predicted if predicted is not None else [predicted_labels(row) for row in rows]
        micro_per_epoch = math.ceil(len(rows) / batch_size)
        self.steps_per_epoch = math.ceil(micro_per_epoch / accumulation)
        self.total_steps = max_steps or epochs * self.steps_per_epoch
        self.epochs = math.ceil(self.total_steps / self.steps_per_epoch)

    def epoch_order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(len(self.rows), generator=generator).tolist()

    def micro_batches(self, after_step: int = 0) -> Iterator[MicroBatch]:
        """Every micro-batch of the optimizer steps after ``after_step``, in order, until the last step."""
        step = 0
        for epoch in range(self.epochs):
            order = self.epoch_order(epoch)
            micro = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
            for w, start in enumerate(range(0, len(micro), self.accumulation)):
                step += 1
                if step > self.total_steps:
                    return
                if step <= after_step:
                    continue
                window = micro[start:start + self.accumulation]
                items = sum(self.predicted[i] for batch in window for i in batch)
                done = epoch + (w + 1) / self.steps_per_epoch
                for j, batch in enumerate(window):
                    chosen = [self.rows[i] for i in batch]
                    ids, mask, labels = collate(chosen, self.pad_id)
                    yield MicroBatch(ids, mask, labels, items, int(mask.sum()), j == len(window) - 1, step, done)


def eval_batches(rows: list[dict], batch_size: int, pad_id: int) -> list[tuple[torch.Tensor, ...]]:
    """The eval set in order (the Trainer's sequential sampler), collated batch by batch."""
    return [collate(rows[i:i + batch_size], pad_id) for i in range(0, len(rows), batch_size)]


def stack(batches: list[tuple[torch.Tensor, torch.Tensor]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Several trials' ``(input_ids, attention_mask)`` as one batch, each right-padded to the longest."""
    length = max(ids.shape[1] for ids, _ in batches)
    pad = torch.nn.functional.pad
    ids = torch.cat([pad(ids, (0, length - ids.shape[1]), value=pad_id) for ids, _ in batches])
    mask = torch.cat([pad(mask, (0, length - mask.shape[1]), value=0) for _, mask in batches])
    return ids, mask
