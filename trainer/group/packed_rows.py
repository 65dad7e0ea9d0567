"""A stacked step without padding: each member's rows end to end in one sequence, attention still per row.

Stacking K members' micro-batches as ``[K * rows, longest row]`` pads every row to the longest row
of the whole stack: on 16-row batches of the Swedish translation rows (about 65 tokens, the
longest 139) half of what a K=64 step computes is padding, and every layer pays for it. Packed,
member k's rows lie end to end in row k of ``[K, length]`` (``length``: the most tokens of a
member, rounded up), and the decoder's linear layers and each member's stacked adapter
(:mod:`trainer.group.stacked_lora`) see only real tokens and a few at the end::

    member 0:  a a a a b b b c c c c c .      position_ids  0 1 2 3 0 1 2 0 1 2 3 4 0
    member 1:  d d d e e e e e e f f . .                    0 1 2 0 1 2 3 4 5 0 1 0 0

Attention must still see each row alone. :func:`packed_attention`, registered with transformers
as the attention of the packed step, gathers queries, keys and values into one right-padded row
each (``[rows, longest, heads, dim]``), runs the model's own SDPA attention on them with a causal
mask (right padding under a causal mask changes nothing for a real token: it only ever sees
earlier positions) and puts the outputs back in packed order. The gathers are a few copies a layer
of the attention's inputs, not a dense block mask over the packed sequence; each one's backward is
the opposite gather (:class:`_Moved`; the padding reads zeros), not an atomic scatter-add.

Position ids start again at every row (rotary embeddings see each row as it is alone); no
attention mask is built (a registered attention with no mask function gets none), so no step
waits on the GPU to find the packed rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainer.group.attention_swap import attending_with

ATTENTION = "group_packed"


@dataclass(frozen=True)
class PackedLayout:
    """Where each row's tokens are in the packed ``[count, length]`` step.

    ``grid`` (``[rows * longest]``): for each position of each right-padded row, the index of its
    token in the flat ``[count * length]`` packed tokens, or ``count * length`` (a zero) for a
    padded position; ``back`` (``[count * length]``): for each packed token, its place in the flat
    ``[rows * longest]`` grid, or ``rows * longest`` (a zero) for a pack's end padding. Between
    the real tokens and their places the two are each other's inverse.
    """

    grid: torch.Tensor
    back: torch.Tensor
    rows: int
    longest: int


@dataclass(frozen=True)
class Packed:
    """A packed step on the CPU: ``ids`` and ``positions`` ``[count, length]``, each member's row starts in its
    pack (``starts[k][j]``: where row j of member k begins) and the attention layout."""

    ids: torch.Tensor
    positions: torch.Tensor
    starts: list[torch.Tensor]
    layout: PackedLayout


def pack(parts: list[tuple[torch.Tensor, torch.Tensor]], pad_id: int, multiple: int = 1,
         longest_multiple: int = 1) -> Packed:
    """Pack each member's right-padded ``(input_ids, attention_mask)`` (``[rows, width]``) into one row, its length
    rounded up to a multiple of ``multiple``; the attention's rows padded to a multiple of ``longest_multiple``."""
    lengths = [mask.sum(1) for _, mask in parts]
    most = max(int(n.sum()) for n in lengths)
    length = -(-most // multiple) * multiple
    count = len(parts)
    ids = torch.full((count, length), pad_id, dtype=torch.long)
    positions = torch.zeros((count, length), dtype=torch.long)
    longest = -(-max(int(n.max()) for n in lengths) // longest_multiple) * longest_multiple
    rows = sum(len(n) for n in lengths)
    starts, grid_parts = [], []
    back = torch.full((count * length,), rows * longest, dtype=torch.long)  # end padding: the zero place
    p = torch.arange(longest)
    row = 0
    for k, ((ids_k, mask_k), n) in enumerate(zip(parts, lengths, strict=True)):
        real = mask_k.bool()
        total = int(n.sum())
        ids[k, :total] = ids_k[real]
        positions[k, :total] = (mask_k.cumsum(1) - 1)[real]
        start = torch.cumsum(n, 0) - n
        starts.append(start)
        # grid: row j's position p < n[j] is packed token k*length + start[j] + p
        grid_parts.append(torch.where(p[None, :] < n[:, None], k * length + start[:, None] + p[None, :], count * length))
        # back: packed token start[j] + p (p < n[j]) sits at grid place (row + j) * longest + p
        rows_k = torch.repeat_interleave(torch.arange(len(n)), n)
        back[k * length: k * length + total] = (row + rows_k) * longest + positions[k, :total]
        row += len(n)
    layout = PackedLayout(torch.cat(grid_parts).view(-1), back, rows, longest)
    return Packed(ids, positions, starts, layout)


_active: list[PackedLayout] = []


class _Moved(torch.autograd.Function):
    """``out[i] = x[to[i]]`` along the first dimension, ``to[i] == len(x)`` giving zeros; the backward is the
    same with ``fro``, the inverse of ``to`` on the rows it moves (``len(out)`` where a row of ``x`` is not moved:
    its gradient is zero)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, to: torch.Tensor, fro: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(fro)
        return _take(x, to)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (fro,) = ctx.saved_tensors
        return _take(grad, fro), None, None


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, x.new_zeros(1, *x.shape[1:])]).index_select(0, index)


def packed_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """transformers' attention interface over a packed step: each row's own causal SDPA attention.

    ``query`` is ``[count, heads, length, dim]`` (``key``, ``value`` with the key-value heads);
    returns ``([count, length, heads, dim], None)`` as transformers' own attentions do.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    layout = _active[-1]
    count, heads, length, dim = query.shape

    def rows(t: torch.Tensor) -> torch.Tensor:
        flat = _Moved.apply(t.transpose(1, 2).reshape(count * length, t.shape[1], dim), layout.grid, layout.back)
        return flat.view(layout.rows, layout.longest, t.shape[1], dim).transpose(1, 2)

    out, _ = sdpa_attention_forward(module, rows(query), rows(key), rows(value), None, dropout=dropout,
                                    scaling=scaling, is_causal=True)
    flat = _Moved.apply(out.reshape(layout.rows * layout.longest, heads, dim), layout.back, layout.grid)
    return flat.view(count, length, heads, dim), None


def attending_packed(config, layout: PackedLayout):
    """Within it, ``config``'s model attends as :func:`packed_attention` over ``layout`` (the backward too:
    activation checkpointing runs the layers again in it)."""
    return attending_with(config, ATTENTION, packed_attention, layout, _active)
