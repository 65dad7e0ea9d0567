"""Rotary position embeddings in four kernels each way, for a group's steps on a GPU (on by default for a
stacked group on a GPU: :func:`trainer.group.run_group.trainer_options`).

transformers rotates the query and key states as ``x * cos + rotate_half(x) * sin``, where
``rotate_half`` negates one half and concatenates: five kernels forward for each of the two, and
about a dozen backward (the slices' zero-filled gradients, their sums). Written out by halves,

    out1 = x1 * cos1 - x2 * sin1          grad_x1 = g1 * cos1 + g2 * sin2
    out2 = x2 * cos2 + x1 * sin2          grad_x2 = g2 * cos2 - g1 * sin1

each is a product and a fused multiply-add (``addcmul``) per half, into one output, forward and backward.
``addcmul`` rounds once where transformers rounds the two products and their sum: bf16 rounding apart.

    with rotating_by_halves(model):
        model(...)                    # every attention layer of model's module rotates by halves
"""

from __future__ import annotations

import functools
import sys
from contextlib import contextmanager

import torch


class RotateByHalves(torch.autograd.Function):
    """``x * cos + rotate_half(x) * sin`` (``cos`` and ``sin`` broadcast to ``x``), with its backward by halves."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(cos, sin)
        return _by_halves(x, cos, sin, sign=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        cos, sin = ctx.saved_tensors
        return _by_halves(grad, cos, sin, sign=-1), None, None


def _by_halves(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, sign: int) -> torch.Tensor:
    """sign 1: the rotation (out1 = x1 c1 - x2 s1, out2 = x2 c2 + x1 s2); -1: its transpose, the backward
    (out1 = x1 c1 + x2 s2, out2 = x2 c2 - x1 s1)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    c1, c2, s1, s2 = cos[..., :half], cos[..., half:], sin[..., :half], sin[..., half:]
    # x's own layout (its strides: the heads' transposed view), as transformers' products keep it for the attention
    out = torch.empty_like(x, dtype=torch.result_type(x, cos))
    first, second = out[..., :half], out[..., half:]
    torch.mul(x1, c1, out=first)
    torch.mul(x2, c2, out=second)
    first.addcmul_(x2, s1 if sign > 0 else s2, value=-sign)
    second.addcmul_(x1, s2 if sign > 0 else s1, value=sign)
    return out


def apply_rotary_by_halves(q, k, cos, sin, unsqueeze_dim: int = 1):
    """transformers' ``apply_rotary_pos_emb``, by halves."""
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    return RotateByHalves.apply(q, cos, sin), RotateByHalves.apply(k, cos, sin)


@functools.cache
def _same_as(apply) -> bool:
    """Whether ``apply`` (a modeling module's ``apply_rotary_pos_emb``) rotates as this one does, on a few numbers
    (some models' functions of that name rotate interleaved pairs, or take other arguments)."""
    generator = torch.Generator().manual_seed(0)
    q, k, cos, sin = (torch.randn(shape, generator=generator, dtype=torch.float64)
                      for shape in ((1, 2, 3, 8), (1, 1, 3, 8), (1, 3, 8), (1, 3, 8)))
    try:
        theirs = apply(q, k, cos, sin)
    except Exception:  # noqa: BLE001 - another signature: not this rotation
        return False
    ours = apply_rotary_by_halves(q, k, cos, sin)
    return all(isinstance(t, torch.Tensor) and t.shape == o.shape and torch.allclose(t, o)
               for t, o in zip(theirs, ours, strict=True))


@contextmanager
def rotating_by_halves(model):
    """Within it, the attention layers of ``model``'s modeling module (one calling ``apply_rotary_pos_emb`` by its
    module's name for it, as Llama's and its copies do) rotate by halves; transformers' own afterwards."""
    module = sys.modules[type(model).__module__]
    before = getattr(module, "apply_rotary_pos_emb", None)
    if before is None or not _same_as(before):
        yield
        return
    def apply(q, k, cos, sin, *args, **kwargs):
        if cos.shape[-1] != q.shape[-1] or args[1:] or kwargs.keys() - {"unsqueeze_dim"}:  # partial rotary, ...
            return before(q, k, cos, sin, *args, **kwargs)
        return apply_rotary_by_halves(q, k, cos, sin, *args, **kwargs)

    module.apply_rotary_pos_emb = apply
    try:
        yield
    finally:
        module.apply_rotary_pos_emb = before
