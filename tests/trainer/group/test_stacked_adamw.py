"""step_slots is clip_grad_norm_ then torch's AdamW for every due slot at its own rank, on the CPU and on a GPU."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from trainer.group.stacked_adamw import step_slots
from trainer.group.stacked_lora import SlotStack

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU"))]
SHAPES = {"q": (12, 12), "k": (12, 4), "down": (20, 12)}  # in, out


@pytest.mark.parametrize("device", DEVICES)
def test_three_steps_of_slots_of_different_ranks_are_torchs_clipped_adamw(device):
    layers = {name: SimpleNamespace(in_features=a, out_features=b) for name, (a, b) in SHAPES.items()}
    stack = SlotStack(layers, torch.device(device), torch.float32)
    generator = torch.Generator().manual_seed(0)
    members = [  # rank, lr, weight decay, max_grad_norm, gradient spread (the first inside its clip norm)
        (4, 3e-2, 0.0, 1.0, 1e-3), (8, 1e-2, 0.3, 0.5, 1.0), (2, 5e-3, 0.1, 1.0, 1.0)]
    theirs = []
    for slot, (r, lr, decay, _, _) in enumerate(members):
        weights = {name: (torch.randn(r, a, generator=generator), torch.randn(b, r, generator=generator))
                   for name, (a, b) in SHAPES.items()}
        stack.add(slot, {name: (a.to(device), b.to(device)) for name, (a, b) in weights.items()}, 1.0)
        params = [p.to(device).requires_grad_() for pair in weights.values() for p in pair]
        theirs.append((params, torch.optim.AdamW(params, lr=lr, weight_decay=decay)))
    due = [(slot, {"lr": lr, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": decay}, max_norm)
           for slot, (_, lr, decay, max_norm, _) in enumerate(members[:2])]  # the last slot accumulates
    for _ in range(3):
        for slot, (params, _) in enumerate(theirs):
            spread = members[slot][4]
            views = [g for pair in stack.slot_views(stack.grads, slot).values() for g in pair]
            for p, view in zip(params, views, strict=True):
                p.grad = (torch.randn(p.shape, generator=generator) * spread).to(device)
                view.add_(p.grad)
        keep = step_slots(stack, due)
        for slot, (params, adamw) in enumerate(theirs[:2]):
            torch.nn.utils.clip_grad_norm_(params, members[slot][3])
            adamw.step()
        assert keep.tolist() == [0.0, 0.0, 1.0]
    for slot, (params, _) in enumerate(theirs[:2]):
        ours = [p for pair in stack.slot_views(stack.weights, slot).values() for p in pair]
        for mine, reference in zip(ours, params, strict=True):
            torch.testing.assert_close(mine, reference.detach(), rtol=1e-5, atol=1e-6)
        assert not stack.numbers(stack.grads, slot).any() and stack.steps[slot] == 3
    waiting = [g for pair in stack.slot_views(stack.grads, 2).values() for g in pair]  # three steps' gradients summed
    assert all(g.abs().sum() > 0 for g in waiting) and stack.steps[2] == 0
    for flat in stack.buffers:  # padding beyond each slot's own rank never written
        for slot in stack.occupied:
            assert not flat[slot, stack.ranks[slot] * stack.unit:].any()
