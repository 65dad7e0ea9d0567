"""Copies of stacked adapters taken at members' eval points, evaluated later, several in one forward.

A member's evaluation stops the whole group while one forward runs over its eval rows; on a GPU that
forward is launch-bound, so evaluating several members at once costs about what one costs. Members
reach their eval points at different steps, though (they joined at different steps and train for
different lengths). A stacked group therefore copies a member's adapter at its eval point (one copy
of its row of the flat ``[S, N]`` weights, :class:`trainer.group.stacked_lora.SlotStack`) and goes on
training; the copies held are evaluated together a few steps later, each exactly as the member was at
its eval point (:meth:`trainer.group.stacked_trainer.StackedGroupTrainer.evaluate_held`).

    rows = HeldAdapters(stack)
    row = rows.hold(slot)          # the slot's weights and scaling now
    with rows.reading():           # the adapted layers read the held copies instead of the slots
        ...                        # forwards routed by row (StackedRows.index into the held rows)
    rows.release(row)
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch.nn import functional as F

from trainer.group.stacked_lora import LayerStack, SlotStack, copy_ranks


class HeldAdapters:
    """Held copies of slots' adapters (weights and LoRA scaling), row by row, at the stack's rank when held."""

    def __init__(self, stack: SlotStack) -> None:
        self.stack = stack
        self.rank = 0
        self.weights = torch.zeros(0, 0, device=stack.device, dtype=stack.dtype)
        self.scale = torch.zeros(0, device=stack.device, dtype=stack.dtype)
        self.free: list[int] = []

    @torch.no_grad()
    def hold(self, slot: int) -> int:
        """Copy ``slot``'s adapter as it is now into a free row; the row."""
        if self.rank != self.stack.rank:
            self._regrid(len(self.weights), self.stack.rank)
        if not self.free:
            self._regrid(max(1, 2 * len(self.weights)), self.rank)
        row = self.free.pop(0)
        self.weights[row].copy_(self.stack.weights[slot])
        self.scale[row] = self.stack.scale[slot]
        return row

    def release(self, row: int) -> None:
        self.free.append(row)
        self.free.sort()

    @contextmanager
    def reading(self):
        """Within the block, every adapted layer applies the held rows (routed by row) instead of the slots."""
        layers = list(self.stack.layers.values())
        saved = [layer.stack for layer in layers]
        for layer, (a, b) in zip(layers, self.stack.views(self.weights, self.rank), strict=True):
            layer.stack = LayerStack(a, b)
        try:
            yield
        finally:
            for layer, stack in zip(layers, saved, strict=True):
                layer.stack = stack

    def _regrid(self, rows: int, rank: int) -> None:
        """``rows`` rows at ``rank`` (the stack grew its rank since the rows in use were held: padded with zeros)."""
        new = torch.zeros(rows, self.stack.width(rank), device=self.stack.device, dtype=self.stack.dtype)
        copy_ranks(self.stack, new, rank, self.weights, self.rank)
        self.free += list(range(len(self.weights), rows))
        self.weights, self.rank = new, rank
        self.scale = F.pad(self.scale, (0, rows - len(self.scale)))
