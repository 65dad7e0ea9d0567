"""The multi-adapter LoRA layer on the real tiny model: PEFT's initial weights, PEFT's outputs, and each
adapter's outputs and gradients in a stacked batch equal to those of its rows alone."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from tests.sweep.live_study import TINY_MODEL
from tests.trainer.group.rounding import assert_close_to_scale
from trainer.group.multi_lora import Routing, Segment, attach_multi_lora, lora_scaling, peft_init

ATTN = "eager"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def base():
    return AutoModelForCausalLM.from_pretrained(TINY_MODEL, attn_implementation=ATTN).eval()


def peft_model(base, r, alpha, rslora, seed):
    torch.manual_seed(seed)
    config = LoraConfig(r=r, lora_alpha=alpha, use_rslora=rslora, target_modules=TARGETS, task_type="CAUSAL_LM")
    return get_peft_model(copy.deepcopy(base), config)


def grouped(base, configs, matmul="loop", seed=3407, dropout=0.0):
    """A copy of the base with one adapter per ``(r, alpha, rslora)``; B drawn at random so the adapters matter;
    with ``dropout``, each adapter draws its masks from its own generator and the model is in training mode."""
    model, routing = copy.deepcopy(base), Routing(matmul)
    layers = attach_multi_lora(model, TARGETS, routing)
    generator = torch.Generator().manual_seed(seed + 1)
    for slot, (r, alpha, rslora) in enumerate(configs):
        masks = torch.Generator().manual_seed(100 + slot)
        for layer, (a, b) in zip(layers.values(), peft_init(layers, r, seed + slot), strict=True):
            b = torch.randn(b.shape, generator=generator) * 0.1
            layer.add_adapter(slot, a, b, lora_scaling(r, alpha, rslora), dropout, masks)
    return model.train(dropout > 0), routing, layers


def batch(rows, length, seed):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(6, 500, (rows, length), generator=generator)
    lengths = torch.randint(length // 2, length + 1, (rows,), generator=generator)
    lengths[0] = length
    return ids, (torch.arange(length)[None] < lengths[:, None]).long()


@pytest.mark.parametrize(("r", "alpha", "rslora"), [(4, 16, False), (8, 8, True), (16, 32, False)])
def test_initial_adapters_are_the_ones_peft_draws(base, r, alpha, rslora):
    peft = peft_model(base, r, alpha, rslora, seed=11)
    model, _, layers = grouped(base, [])
    drawn = peft_init(layers, r, seed=11)
    peft_modules = dict(peft.base_model.model.named_modules())
    for (name, layer), (a, b) in zip(layers.items(), drawn, strict=True):
        assert torch.equal(peft_modules[name].lora_A["default"].weight, a)
        assert torch.equal(peft_modules[name].lora_B["default"].weight, b)
        assert peft_modules[name].scaling["default"] == lora_scaling(r, alpha, rslora)
        assert layer.base_layer is not None
    for a, b in drawn:  # a member trains its own copy: the next member drawn with the same seed starts the same
        a.add_(1.0)
        b.add_(1.0)
    again = peft_init(layers, r, seed=11)
    for name, (a, b) in zip(layers, again, strict=True):
        assert torch.equal(peft_modules[name].lora_A["default"].weight, a) and not b.any()


def test_a_lone_adapter_gives_peft_outputs_bit_for_bit(base):
    peft = peft_model(base, 8, 16, False, seed=5)
    model, routing, layers = grouped(base, [(8, 16, False)])
    peft_modules = dict(peft.base_model.model.named_modules())
    with torch.no_grad():
        for name, layer in layers.items():
            peft_modules[name].lora_A["default"].weight.copy_(layer.adapters["0"].lora_A)
            peft_modules[name].lora_B["default"].weight.copy_(layer.adapters["0"].lora_B)
        ids, mask = batch(4, 40, seed=1)
        with routing.route([Segment(0, 0, 4, 40)]):
            ours = model(input_ids=ids, attention_mask=mask).logits
        theirs = peft(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(ours, theirs)


def lone_and_stacked(base, matmul, dropout):
    """Logits and adapter gradients of three adapters: each on its own batch, then all in one stacked batch."""
    configs = [(4, 16, False), (16, 8, True), (8, 32, False)]
    batches = [batch(4, 40, 1), batch(5, 23, 2), batch(4, 31, 3)]
    alone = []
    for slot, (ids, mask) in enumerate(batches):
        model, routing, layers = grouped(base, configs, matmul, dropout=dropout)
        with routing.route([Segment(slot, 0, len(ids), ids.shape[1])]):
            logits = model(input_ids=ids, attention_mask=mask).logits
        logits[mask.bool()].square().sum().backward()
        grads = [p.grad for layer in layers.values() for p in layer.adapters[str(slot)].parameters()]
        alone.append((logits[mask.bool()].detach(), grads))
    model, routing, layers = grouped(base, configs, matmul, dropout=dropout)
    length = max(ids.shape[1] for ids, _ in batches)
    ids = torch.cat([torch.nn.functional.pad(i, (0, length - i.shape[1]), value=5) for i, _ in batches])
    mask = torch.cat([torch.nn.functional.pad(m, (0, length - m.shape[1])) for _, m in batches])
    starts = [0, 4, 9, 13]
    segments = [Segment(k, starts[k], starts[k + 1], batches[k][0].shape[1]) for k in range(3)]
    with routing.route(segments):
        logits = model(input_ids=ids, attention_mask=mask).logits
    together = []
    loss = 0
    for k, s in enumerate(segments):
        own = logits[s.start:s.stop, :s.length][batches[k][1].bool()]
        loss = loss + own.square().sum()
        together.append(own)
    loss.backward()
    return alone, [(t.detach(), [p.grad for layer in layers.values() for p in layer.adapters[str(k)].parameters()])
                   for k, t in enumerate(together)]


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_each_adapter_sees_its_rows_as_if_alone_bit_for_bit(base, dropout):
    alone, together = lone_and_stacked(base, "loop", dropout)
    for (logits, grads), (logits_g, grads_g) in zip(alone, together, strict=True):
        assert torch.equal(logits, logits_g)
        assert all(torch.equal(g, h) for g, h in zip(grads, grads_g, strict=True))


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_batched_matmul_over_padded_ranks_agrees_to_rounding(base, dropout):
    alone, together = lone_and_stacked(base, "bmm", dropout)
    for (logits, grads), (logits_g, grads_g) in zip(alone, together, strict=True):
        torch.testing.assert_close(logits_g, logits, rtol=1e-5, atol=1e-5)
        for g, h in zip(grads, grads_g, strict=True):
            assert_close_to_scale(h, g, rel=3e-5)  # 3e-6 seen on an AVX-512 CPU


def test_dropout_draws_masks_in_training_only(base):
    model, routing, _ = grouped(base, [(8, 16, False)], dropout=0.3)
    ids, mask = batch(4, 20, seed=4)
    with torch.no_grad(), routing.route([Segment(0, 0, 4, 20)]):
        first, second = (model(input_ids=ids, attention_mask=mask).logits for _ in range(2))
        model.eval()
        third, fourth = (model(input_ids=ids, attention_mask=mask).logits for _ in range(2))
    assert not torch.equal(first, second)
    assert torch.equal(third, fourth)
