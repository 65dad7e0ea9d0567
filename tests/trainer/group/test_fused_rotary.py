"""Rotary embeddings by halves rotate as transformers does, forward and backward, and train a group the same."""

from __future__ import annotations

import torch
from transformers.models.gptj import modeling_gptj
from transformers.models.llama import modeling_llama

from tests.trainer.group.test_stacked_lora import group, steps
from trainer.group import fused_rotary
from trainer.group.fused_rotary import apply_rotary_by_halves, rotating_by_halves
from trainer.group.run_group import trainer_options


def _inputs():
    generator = torch.Generator().manual_seed(1)
    q, k = (torch.randn(shape, generator=generator, dtype=torch.float64).transpose(1, 2).requires_grad_()
            for shape in ((2, 5, 4, 8), (2, 5, 2, 8)))  # [batch, heads, length, dim] views, as the attention's
    cos, sin = (torch.randn(2, 5, 8, generator=generator, dtype=torch.float64) for _ in range(2))
    return q, k, cos, sin


def test_by_halves_is_transformers_rotation_and_its_gradient():
    q, k, cos, sin = _inputs()
    for ours, theirs in zip(apply_rotary_by_halves(q, k, cos, sin), modeling_llama.apply_rotary_pos_emb(q, k, cos, sin),
                            strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
        assert ours.stride() == theirs.stride()  # the heads' layout kept: the attention reads it as a view
    assert torch.autograd.gradcheck(lambda q, k: apply_rotary_by_halves(q, k, cos, sin), (q, k))


def test_only_the_same_rotation_is_swapped_and_only_within_the_block():
    class Llama(torch.nn.Module):
        pass

    class GPTJ(torch.nn.Module):  # interleaved pairs, another signature: left alone
        pass

    Llama.__module__, GPTJ.__module__ = modeling_llama.__name__, modeling_gptj.__name__
    before = {m: m.apply_rotary_pos_emb for m in (modeling_llama, modeling_gptj)}
    with rotating_by_halves(Llama()):
        assert modeling_llama.apply_rotary_pos_emb is not before[modeling_llama]
        q, k, cos, sin = _inputs()
        _, k_grad = torch.autograd.grad(sum(t.sum() for t in modeling_llama.apply_rotary_pos_emb(q, k, cos, sin)),
                                        (q, k))
        assert k_grad.shape == k.shape
    with rotating_by_halves(GPTJ()):
        assert modeling_gptj.apply_rotary_pos_emb is before[modeling_gptj]
    assert all(m.apply_rotary_pos_emb is f for m, f in before.items())


def test_a_group_rotating_by_halves_trains_as_transformers_rotation(tmp_path, monkeypatch):
    trials = [{"r": 4, "batch": 3, "seed": 1}, {"r": 8, "batch": 2, "seed": 2, "lr": 3e-3}]
    calls = []
    original = fused_rotary.RotateByHalves.apply
    monkeypatch.setattr(fused_rotary.RotateByHalves, "apply", lambda *a: calls.append(1) or original(*a))
    for name in ("halves", "cat"):
        (tmp_path / name).mkdir()
    ours, theirs = group(tmp_path / "halves", trials, rotary_by_halves=True), group(tmp_path / "cat", trials)
    steps(ours, 4)
    assert len(calls) == 4 * 2 * ours.decoder.config.num_hidden_layers  # queries and keys of every layer, each step
    steps(theirs, 4)
    assert ours.stack.steps == theirs.stack.steps
    torch.testing.assert_close(ours.stack.weights, theirs.stack.weights, rtol=0,
                               atol=1e-4 * theirs.stack.weights.abs().max().item())  # Adam: float32 rounding


def test_a_sweeps_stacked_group_rotates_by_halves_on_a_gpu_only():
    assert trainer_options("cuda", "stacked") == {"rotary_by_halves": True}
    assert trainer_options("cuda", "stacked", cuda_graphs=True) == {"rotary_by_halves": True, "cuda_graphs": True}
    assert trainer_options("cpu", "stacked") == {}  # the CPU's group stays bit for bit as it was
    for matmul in ("loop", "bmm"):  # their trainer takes no options (new_group_trainer refuses them)
        assert trainer_options("cuda", matmul) == {}
