"""Attention of the exact (``loop``) group: each member's rows attend at their own length, as alone.

A ``loop`` group stacks its members' micro-batches right-padded to the step's longest row. Every op
of a decoder layer then computes a member's tokens as its lone run does (a matmul's rows do not
depend on the other rows; softmax ignores the masked padding), except one: on the CPU the backward
of softmax sums each row in blocks set by the row's length, so a member whose rows are padded from
56 to 83 tokens gets query and key gradients different in the last bit, and training carries that
on (measured: a 12-trial demo sweep four at a time, 4 of 12 trials off their lone runs, one by 0.1
in eval loss). Within :func:`attending_by_segment` the model's attention is
:func:`segment_attention`, registered with transformers: the model's own attention once per member,
on its rows cut to its own length (queries, keys, values and mask), so each member's attention,
forward and backward, has exactly the shapes of its lone run.
"""

from __future__ import annotations

import sys

import torch
from torch.nn import functional as F

from trainer.group.attention_swap import attending_with

ATTENTION = "group_segments"
_active: list[tuple] = []  # (segments, the model's own attention function, its name), innermost last


def segment_attention(module, query, key, value, attention_mask, **kwargs):
    """transformers' attention interface: ``query`` ``[rows, heads, length, dim]``, each segment's rows attended
    at the segment's length; returns ``([rows, length, heads, dim], None)`` as transformers' attentions do."""
    segments, inner, _ = _active[-1]
    rows, heads, length, dim = query.shape
    pieces, row = [], 0
    for s in segments:
        if s.start > row:  # rows of no segment: nothing reads them
            pieces.append(query.new_zeros(s.start - row, length, heads, dim))
        n = s.length
        mask = attention_mask
        if mask is not None:
            mask = (mask if mask.shape[0] == 1 else mask[s.start:s.stop])[..., :n, :n]
        out, _ = inner(module, query[s.start:s.stop, :, :n], key[s.start:s.stop, :, :n],
                       value[s.start:s.stop, :, :n], mask, **kwargs)
        pieces.append(F.pad(out, (0, 0, 0, 0, 0, length - n)) if n < length else out)
        row = s.stop
    if row < rows:
        pieces.append(query.new_zeros(rows - row, length, heads, dim))
    return torch.cat(pieces), None


def segment_mask(*args, **kwargs):
    """The mask the model's own attention gets (a registered attention without a mask function gets none)."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    return ALL_MASK_ATTENTION_FUNCTIONS[_active[-1][2]](*args, **kwargs)


def attending_by_segment(config, segments):
    """Within it, the model of ``config`` attends with :func:`segment_attention` over ``segments``
    (:class:`trainer.group.multi_lora.Segment`), each with the attention the config names."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    own = config._attn_implementation
    if own == "eager":  # each model module has its own eager attention
        inner = sys.modules[_model_module(config)].eager_attention_forward
    else:
        inner = ALL_ATTENTION_FUNCTIONS[own]
    return attending_with(config, ATTENTION, segment_attention, (tuple(segments), inner, own), _active, segment_mask)


def _model_module(config) -> str:
    """The transformers module of ``config``'s model, where its ``eager_attention_forward`` is."""
    return type(config).__module__.replace(".configuration_", ".modeling_")
