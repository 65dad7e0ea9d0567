"""The decoder's RMSNorms through torch's own ``rms_norm`` on a GPU: fewer kernels and float32 copies a step.

transformers' ``LlamaRMSNorm`` (and its copies in other models) computes in float32 with separate
operators: a cast, a square, a mean, an add, a reciprocal square root, a product, a cast back and the
weight's product (eight kernels forward and about a dozen backward, on activations of every token of
a stacked step), and autograd keeps its float32 intermediates for the backward. ``F.rms_norm``
normalises in float32 in one kernel on a GPU and keeps the input and each row's scale.

The numbers differ from transformers' by rounding: the weight's product is made in float32 before the
one rounding to the base's dtype, where transformers rounds the normalised row first. So it is used on
a GPU only, where a trial trained alone (transformers, or Unsloth's own fused norm) is matched within
bf16 noise anyway; on a CPU the group computes as transformers does, bit for bit.
"""

from __future__ import annotations

import copy
import types

import torch
from torch.nn import functional as F


def fuse_norms(model) -> int:
    """Route every RMSNorm module of ``model`` (a ``weight`` of one dimension and a ``variance_epsilon``) whose class
    computes what ``F.rms_norm`` does (checked once a class, in float64) through it, outside autocast; returns
    how many."""
    count, same = 0, {}
    for module in model.modules():
        if not type(module).__name__.endswith("RMSNorm") or not hasattr(module, "variance_epsilon"):
            continue
        if getattr(module, "weight", None) is None or module.weight.ndim != 1:
            continue
        if type(module) not in same:
            same[type(module)] = _computes_rms_norm(module)
        if same[type(module)]:
            module.forward = types.MethodType(_forward, module)
            count += 1
    return count


def _computes_rms_norm(module) -> bool:
    """Whether ``module``'s class normalises as ``F.rms_norm`` with its weight does, on a few numbers (some models'
    norms add one to the weight, take a gate, or normalise in groups)."""
    probe = copy.deepcopy(module).to("cpu", torch.float64)
    probe.weight.data.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(0))
    x = torch.randn(2, 3, probe.weight.shape[0], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    try:
        with torch.no_grad():
            theirs = type(probe).forward(probe, x)
    except Exception:  # noqa: BLE001 - another signature: not this norm
        return False
    ours = F.rms_norm(x, (x.shape[-1],), probe.weight, probe.variance_epsilon)
    return isinstance(theirs, torch.Tensor) and theirs.shape == ours.shape and torch.allclose(theirs, ours)


def _forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    with torch.autocast(hidden_states.device.type, enabled=False):  # in the input's dtype (the base's, under autocast)
        return F.rms_norm(hidden_states, (hidden_states.shape[-1],), self.weight.to(hidden_states.dtype),
                          self.variance_epsilon)
