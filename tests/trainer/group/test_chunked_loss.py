"""The chunked output-layer loss gives the plain ``cross_entropy(linear(hidden).float())`` and its gradient."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from trainer.group.chunked_loss import chunked_token_loss


@pytest.mark.parametrize("chunk", [1, 5, 37, 100])
@pytest.mark.parametrize("with_bias", [False, True])
def test_chunked_losses_and_gradients_are_the_plain_ones(chunk, with_bias):
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(37, 16, generator=generator, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 16, generator=generator, dtype=torch.float64)
    bias = torch.randn(50, generator=generator, dtype=torch.float64) if with_bias else None
    labels = torch.randint(0, 50, (37,), generator=generator)
    upstream = torch.rand(37, generator=generator, dtype=torch.float64)  # as each member's 1 / label count
    plain = F.cross_entropy(F.linear(hidden, weight, bias).float(), labels, reduction="none")
    (expected,) = torch.autograd.grad((plain * upstream).sum(), hidden)
    ours = chunked_token_loss(hidden, weight, bias, labels, chunk)
    (grad,) = torch.autograd.grad((ours * upstream).sum(), hidden)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, plain, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-6)  # both through float32 softmax
    with torch.no_grad():
        torch.testing.assert_close(chunked_token_loss(hidden, weight, bias, labels, chunk), plain, rtol=1e-6, atol=1e-6)


def test_a_trainable_output_layer_or_an_empty_chunk_is_refused():
    hidden, labels = torch.randn(3, 4), torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="must be frozen"):
        chunked_token_loss(hidden, torch.randn(5, 4, requires_grad=True), None, labels, 2)
    with pytest.raises(ValueError, match="chunk must be at least 1, but got chunk=0"):
        chunked_token_loss(hidden, torch.randn(5, 4), None, labels, 0)
