"""Token cross-entropy through the output layer in chunks of tokens, never holding every token's logits.

``F.cross_entropy(lm_head(hidden).float(), labels, reduction="none")`` keeps the float32 logits of
every label token for the backward (N tokens x the vocabulary: 4.4 GB for 22,000 tokens of a
49,152-token vocabulary, 11 GB for a 128,256-token one, and as much again for their gradient).
:func:`chunked_token_loss` computes each chunk's logits, its losses and, at once, the gradient of
each loss with respect to its hidden state, ``(softmax - onehot) @ W``, which is all the backward
needs (the output layer is frozen): it keeps ``N x hidden`` numbers instead of ``N x vocab``::

    losses = chunked_token_loss(hidden, head.weight, head.bias, labels, chunk=4096)   # [N], float32

The numbers are those of the plain expression up to rounding (the log-sum-exp is computed once
per token either way, in float32).
"""

from __future__ import annotations

import torch


class _ChunkedTokenLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, chunk: int):
        losses, grad = _chunks(hidden, weight, bias, labels, chunk, with_grad=True)
        ctx.save_for_backward(grad)
        return losses

    @staticmethod
    def backward(ctx, grad_losses):
        (grad,) = ctx.saved_tensors
        return grad * grad_losses[:, None].to(grad.dtype), None, None, None, None


def _chunks(hidden, weight, bias, labels, chunk: int, with_grad: bool):
    """The losses ``[N]`` and, ``with_grad``, each loss's gradient with respect to its row of ``hidden``."""
    losses = torch.empty(hidden.shape[0], device=hidden.device, dtype=torch.float32)
    grad = torch.empty_like(hidden) if with_grad else None
    for start in range(0, hidden.shape[0], chunk):
        h, target = hidden[start:start + chunk], labels[start:start + chunk]
        logits = torch.nn.functional.linear(h, weight, bias).float()
        lse = torch.logsumexp(logits, dim=-1)
        losses[start:start + chunk] = lse - logits.gather(1, target[:, None]).squeeze(1)
        if with_grad:  # d loss / d logits = softmax - onehot, in place over the logits
            probabilities = logits.sub_(lse[:, None]).exp_()
            probabilities.scatter_add_(1, target[:, None], probabilities.new_full((len(target), 1), -1.0))
            grad[start:start + chunk] = probabilities.to(weight.dtype) @ weight
    return losses, grad


def chunked_token_loss(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, labels: torch.Tensor,
                       chunk: int) -> torch.Tensor:
    """Cross-entropy of each row of ``hidden`` (``[N, hidden]``) through the frozen output layer ``weight``
    (``[vocab, hidden]``, ``bias``) against ``labels`` (``[N]``), ``chunk`` rows at a time; ``[N]`` float32."""
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, but got {chunk=}")
    if weight.requires_grad or (bias is not None and bias.requires_grad):
        raise ValueError("chunked_token_loss gives no gradient to the output layer; it must be frozen")
    if not (torch.is_grad_enabled() and hidden.requires_grad):
        return _chunks(hidden, weight, bias, labels, chunk, with_grad=False)[0]
    return _ChunkedTokenLoss.apply(hidden, weight, bias, labels, chunk)
