"""The group's fused RMSNorm gives transformers' numbers up to rounding, and reaches every norm of the model."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.sweep.live_study import TINY_MODEL
from trainer.group.fused_norm import fuse_norms


def _model(dtype: torch.dtype):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(TINY_MODEL, dtype=dtype, attn_implementation="eager")
    for name, parameter in model.named_parameters():  # norms that are not all ones: the weight's product counts
        if "norm" in name:
            parameter.data.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 0.05)])
def test_fused_norms_match_transformers(dtype, tolerance):
    model = _model(dtype)
    ids = torch.randint(0, model.config.vocab_size, (3, 17))
    with torch.no_grad():
        before = model(input_ids=ids).logits.float()
    assert fuse_norms(model) == 2 * model.config.num_hidden_layers + 1  # two a layer and the final one
    with torch.no_grad():
        after = model(input_ids=ids).logits.float()
    scale = before.abs().max()
    assert (after - before).abs().max() <= tolerance * scale
    assert not torch.equal(after, before) or dtype == torch.float32  # bf16: it is the fused kernel that ran


def test_fused_norm_backward_matches_transformers():
    model, fused = _model(torch.float32), _model(torch.float32)
    fuse_norms(fused)
    ids = torch.randint(0, model.config.vocab_size, (2, 11))
    grads = []
    for m in (model, fused):
        inputs = m.get_input_embeddings()(ids).detach().requires_grad_()
        m(inputs_embeds=inputs).logits.square().mean().backward()
        grads.append(inputs.grad)
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6 * grads[0].abs().max().item())


def test_norms_that_compute_otherwise_are_left_alone():
    from transformers.models.gemma.modeling_gemma import GemmaRMSNorm  # (1 + weight), and no variance_epsilon
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    class OnePlusRMSNorm(LlamaRMSNorm):  # a variance_epsilon, but the weight's offset of Gemma's
        def forward(self, hidden_states):
            return super().forward(hidden_states) / self.weight * (1.0 + self.weight)

    class GatedRMSNorm(LlamaRMSNorm):  # another signature
        def forward(self, hidden_states, gate):
            return super().forward(hidden_states) * gate

    model = torch.nn.ModuleList([LlamaRMSNorm(8), OnePlusRMSNorm(8), GatedRMSNorm(8), GemmaRMSNorm(8)])
    assert fuse_norms(model) == 1
    assert "forward" in vars(model[0]) and not any("forward" in vars(m) for m in model[1:])
