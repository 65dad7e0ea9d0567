"""Every slot's LoRA adapter of every layer in stacked tensors: the ``stacked`` matmul of a group.

Each adapted layer holds one pair of parameters for all S slots of the group, ``A`` ``[S, r, in]``
and ``B`` ``[S, out, r]`` (r the largest rank; a smaller rank is zero-padded). A step stacks the
members' micro-batches in equal blocks (same rows, same length), so the layer's input
``[K*rows, length, in]`` is ``[K, rows*length, in]`` and all members' updates are two batched
matmuls, whatever K::

    delta[k] = x[k] @ A[k]^T @ (scale[k] * B[k])^T            (torch.bmm, then torch.baddbmm onto the base)

The padding stays zero in training: a padded row j of ``A`` and column j of ``B`` start at zero, so
their gradients ``(scale*B[:, j])^T dy x`` and ``dy^T (x A[j]^T)`` are zero, and the copy, the fold
and the optimizer run over each slot's own rank only. A layer a member does not adapt is zero within
its rank too: zero gradients, AdamW's moments stay zero, the update ``0 / (0 + eps)`` is zero and the
weight decay of zero is zero.

The A and B of every layer are views of one flat ``[S, N]`` tensor (the compute copy of the float
weights, B scaled: :class:`SlotStack`), and each parameter's ``.grad`` a view of one flat gradient
tensor, set once: autograd adds every layer's gradient into it in place, then one kernel a slot adds
it into the float gradients, and the optimizer and each slot's gradient clipping
(:mod:`trainer.group.stacked_adamw`) are a kernel a slot over its own numbers (weights, gradients,
AdamW's two moments) instead of a few hundred per member.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from trainer.group.multi_lora import MultiLoraLinear


class StackedRows(NamedTuple):
    """How the next forward's batch is laid out: ``count`` equal blocks of rows, block k for slot
    ``index[k]`` (None: block k is slot k and every slot of the stack has a block); ``scale`` is the
    blocks' LoRA scalings as ``[count, 1, 1]``."""

    count: int
    index: torch.Tensor | None
    scale: torch.Tensor


class LayerStack:
    """One layer's part of the stack: its ``A`` and ``B`` of every slot; ``scaled``: B already carries each slot's
    LoRA scaling (the stack's compute copy), else it is applied here from the rows' scalings (held copies)."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, scaled: bool = False) -> None:
        self.a, self.b, self.scaled = a, b, scaled

    def forward(self, x: torch.Tensor, result: torch.Tensor, rows: StackedRows) -> torch.Tensor:
        """``result`` (the base layer's output) plus each block's own adapter update, as one tensor."""
        a, b = self.a, self.b
        if rows.index is not None:
            a, b = a.index_select(0, rows.index), b.index_select(0, rows.index)
        # the scaling goes onto B (out x r per slot) rather than onto the output (rows x out per slot)
        return blocks_update(x, result, a, b if self.scaled else b * rows.scale)


def blocks_update(x: torch.Tensor, result: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``result`` plus, for each of the ``len(a)`` equal blocks of rows, ``x_k @ a[k]^T @ b[k]^T`` (``b`` scaled):
    two batched matmuls whatever the number of blocks."""
    count, shape = len(a), result.shape
    xs, base = x.reshape(count, -1, x.shape[-1]), result.reshape(count, -1, shape[-1])
    if not torch.is_autocast_enabled(x.device.type) and x.dtype != a.dtype:
        xs, base = xs.to(a.dtype), base.to(a.dtype)
    return torch.baddbmm(base, torch.bmm(xs, a.transpose(1, 2)), b.transpose(1, 2)).view(shape).to(result.dtype)


@torch.no_grad()
def copy_ranks(stack: SlotStack, new: torch.Tensor, rank: int, old: torch.Tensor, old_rank: int) -> None:
    """Copy the rows of flat ``old`` (every layer at ``old_rank``) into the first rows of flat ``new`` (at ``rank``,
    not smaller), each layer's A and B into the top-left of its own."""
    for (a, b), (a_old, b_old) in zip(stack.views(new, rank), stack.views(old, old_rank), strict=True):
        a[:len(old), :old_rank].copy_(a_old)
        b[:len(old), :, :old_rank].copy_(b_old)


class SlotStack:
    """The stacked adapters of a group's layers, their gradients and AdamW moments, slot by slot.

    ``capacity`` (slots) and ``rank`` grow when a member needs more; slots are filled with
    :meth:`add` and emptied with :meth:`clear`. ``steps[slot]`` is the slot's optimizer step count
    (members join at different steps), ``scale`` the slots' LoRA scalings on the device and
    ``window_loss`` each slot's summed loss over its optimizer step so far.

    The layers compute with a copy of the weights in ``compute_dtype`` (the autocast dtype: what
    autocast would cast them to), each B times its slot's scaling, made once a step by
    :meth:`refresh`; its gradients, in that dtype too, are added into the float gradients by
    :meth:`fold_gradients` (B's times the scaling: the chain rule through the copy). The same numbers as
    casting and scaling in every layer's forward and backward, without a few kernels each a layer.
    A row of the flat tensors is rank-major (:meth:`views`): a slot's numbers at its own rank are the
    start of its row, so the work done number by number (the copy, the fold, the optimizer) is done
    over each slot's own rank, not the stack's largest (a study's ranks 8 to 128: 2.6 times fewer).
    """

    def __init__(self, layers: dict[str, MultiLoraLinear], device: torch.device, dtype: torch.dtype,
                 compute_dtype: torch.dtype | None = None) -> None:
        self.layers, self.device, self.dtype = layers, device, dtype
        # numbers of one rank's row of every layer's A and B (a row of the flat tensors is ``rank`` of them), and
        # where the B begin among them (every layer's row of A comes first); read for every slot at every step
        self.unit = sum(layer.in_features + layer.out_features for layer in layers.values())
        self.a_unit = sum(layer.in_features for layer in layers.values())
        self.compute_dtype = compute_dtype or dtype
        self.capacity = self.rank = 0
        self.ranks: dict[int, int] = {}
        self.adapted: dict[int, list[str]] = {}
        self.steps: list[int] = []
        empty = torch.zeros(0, 0, device=device, dtype=dtype)
        self.weights, self.grads, self.exp_avg, self.exp_avg_sq = empty, empty.clone(), empty.clone(), empty.clone()
        self.compute = torch.zeros(0, 0, device=device, dtype=self.compute_dtype)
        self.compute_grads = self.compute.clone()
        self.scale = torch.zeros(0, device=device, dtype=dtype)
        # each slot's factor for one rank's numbers: 1 for its A, its scaling for its B (the compute copy's)
        self.factors = torch.zeros(0, 0, device=device, dtype=dtype)
        self.window_loss = torch.zeros(0, device=device, dtype=torch.float32)

    @property
    def buffers(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.weights, self.grads, self.exp_avg, self.exp_avg_sq

    def width(self, rank: int) -> int:
        """Numbers per slot with every layer at ``rank``."""
        return rank * self.unit

    def views(self, flat: torch.Tensor, rank: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(A, B)`` of each layer as views of ``flat`` (``[slots, width(rank)]``), in model order. A row is
        ``rank`` runs of :attr:`unit` numbers, run j holding row j of every layer's A, then column j of every
        layer's B: a slot of rank r has all its numbers in the first ``r * unit`` of its row (:meth:`numbers`)."""
        rank = self.rank if rank is None else rank
        if flat.shape[1] != self.width(rank) or (flat.numel() and flat.stride(1) != 1):
            raise ValueError(f"flat tensor {tuple(flat.shape)} is not a stack's rows at rank {rank}")
        pairs, unit, row, at = [], self.unit, flat.stride(0), flat.storage_offset()
        a_at, b_at = at, at + self.a_unit
        for layer in self.layers.values():
            n_in, n_out = layer.in_features, layer.out_features
            pairs.append((flat.as_strided((len(flat), rank, n_in), (row, unit, 1), a_at),
                          flat.as_strided((len(flat), n_out, rank), (row, 1, unit), b_at)))
            a_at, b_at = a_at + n_in, b_at + n_out
        return pairs

    def numbers(self, flat: torch.Tensor, slot: int) -> torch.Tensor:
        """``slot``'s numbers in its row of ``flat`` at the slot's own rank, as ``[r, unit]`` (the rest of its row
        is padding, zero in every buffer)."""
        r = self.ranks[slot]
        return flat[slot, :r * self.unit].view(r, self.unit)

    @property
    def occupied(self) -> list[int]:
        return sorted(self.ranks)

    @torch.no_grad()
    def refresh(self) -> None:
        """The compute copy from the weights as they are now: every A, and every B times its slot's scaling (each
        slot at its own rank, one kernel a slot)."""
        for slot in self.occupied:
            torch.mul(self.numbers(self.weights, slot), self.factors[slot], out=self.numbers(self.compute, slot))

    @torch.no_grad()
    def fold_gradients(self) -> None:
        """Add the compute copy's gradients into the float gradients, B's times their slot's scaling, and zero them
        (each slot at its own rank: its padding's gradients are zero)."""
        for slot in self.occupied:
            mine = self.numbers(self.compute_grads, slot)
            self.numbers(self.grads, slot).addcmul_(mine, self.factors[slot])
            mine.zero_()

    def grow(self, capacity: int, rank: int) -> None:
        """Room for ``capacity`` slots of rank ``rank``: new buffers holding the old values, and new parameters."""
        capacity, rank = max(capacity, self.capacity), max(rank, self.rank)
        if (capacity, rank) == (self.capacity, self.rank):
            return
        grown = []
        for old in self.buffers:
            new = torch.zeros(capacity, self.width(rank), device=self.device, dtype=self.dtype)
            copy_ranks(self, new, rank, old, self.rank)
            grown.append(new)
        self.weights, self.grads, self.exp_avg, self.exp_avg_sq = grown
        # made anew from the weights before each forward (refresh); its gradients are zero between steps
        self.compute = torch.zeros(capacity, self.width(rank), device=self.device, dtype=self.compute_dtype)
        self.compute_grads = torch.zeros_like(self.compute)
        self.scale = F.pad(self.scale, (0, capacity - self.capacity))
        self.factors = F.pad(self.factors, (0, self.unit - self.factors.shape[1], 0, capacity - self.capacity))
        self.window_loss = F.pad(self.window_loss, (0, capacity - self.capacity))
        self.steps += [0] * (capacity - self.capacity)
        self.capacity, self.rank = capacity, rank
        for layer, (a, b), (grad_a, grad_b) in zip(self.layers.values(), self.views(self.compute),
                                                   self.views(self.compute_grads), strict=True):
            a, b = nn.Parameter(a), nn.Parameter(b)
            a.grad, b.grad = grad_a, grad_b  # autograd adds into the compute copy's flat gradient buffer
            layer.stack = LayerStack(a, b, scaled=True)

    @torch.no_grad()
    def add(self, slot: int, weights: dict[str, tuple[torch.Tensor, torch.Tensor]], scaling: float) -> None:
        """Put a member's initial ``{layer name: (A, B)}`` (its layers, in model order) into ``slot``."""
        r = next(iter(weights.values()))[0].shape[0]
        self.grow(slot + 1, r)
        self.clear(slot)
        for name, (a, b) in zip(self.layers, self.views(self.weights), strict=True):
            if name in weights:
                a[slot, :r].copy_(weights[name][0])
                b[slot, :, :r].copy_(weights[name][1])
        self.scale[slot] = scaling
        self.factors[slot, :self.a_unit], self.factors[slot, self.a_unit:] = 1.0, scaling
        self.ranks[slot], self.adapted[slot] = r, list(weights)

    @torch.no_grad()
    def clear(self, slot: int) -> None:
        """Empty ``slot``: weights, gradients, moments, step count, scaling and loss back to zero."""
        if slot >= self.capacity:
            return
        for flat in (*self.buffers, self.compute, self.compute_grads):  # refresh and fold skip an empty slot
            flat[slot].zero_()
        self.scale[slot] = 0.0
        self.factors[slot] = 0.0
        self.window_loss[slot] = 0.0
        self.steps[slot] = 0
        for known in (self.ranks, self.adapted):
            known.pop(slot, None)

    def slot_views(self, flat: torch.Tensor, slot: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{layer name: (A, B)}`` of the layers ``slot``'s member adapts, at its own rank, as views of ``flat``
        (detached: writing into them changes the stack)."""
        return self.cut(flat.detach(), slot, self.rank, self.ranks[slot], self.adapted[slot])

    def cut(self, flat: torch.Tensor, row: int, rank: int, r: int,
            names: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{layer name: (A, B)}`` of the layers in ``names``, at rank ``r``, as views of row ``row`` of ``flat``
        (every layer at ``rank``)."""
        names = set(names)
        return {name: (a[row, :r], b[row, :, :r])
                for name, (a, b) in zip(self.layers, self.views(flat, rank), strict=True) if name in names}
