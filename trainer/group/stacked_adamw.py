"""AdamW and gradient clipping for every slot of a stack at once, each slot with its own hyperparameters.

:func:`step_slots` is torch's ``AdamW`` (``adamw_torch``: decoupled weight decay, betas and eps
of the slot's param group) and ``clip_grad_norm_`` (the slot's ``max_grad_norm`` over its own
parameters), written over the stack's flat ``[S, N]`` tensors with per-slot numbers as ``[S, 1]``
columns: each slot's learning rate (its own schedule's value), step count for the bias correction
(members join at different steps), weight decay and clipping norm. A slot whose optimizer step
is not due (gradient accumulation) or that is empty keeps its weights, moments and gradients: its
column makes every operation the identity. About a dozen kernels a step, whatever the number of
members and layers.

Each member keeps a :class:`SlotOptimizer`: a torch ``AdamW`` whose param group carries its
hyperparameters and which its learning-rate scheduler drives as usual, and whose state is its
slot of the stack, read and written in torch's own ``AdamW`` format, so its checkpoint is the one
a member of a ``loop`` group writes (and each can resume the other's).
"""

from __future__ import annotations

import math

import torch

from trainer.group.group_trainer import to_device
from trainer.group.stacked_lora import SlotStack

CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_'s max_norm / (total_norm + 1e-6)


class SlotOptimizer(torch.optim.AdamW):
    """A member's AdamW in a stacked group: its param group and schedule, its state in its slot of ``stack``.

    ``names`` are the layers the member adapts (its parameters are their A and B, in that order);
    :meth:`step` does nothing, as :func:`step_slots` steps every due slot at once.
    """

    def __init__(self, stack: SlotStack, slot: int, names: list[str], lr: float, weight_decay: float,
                 fused: bool | None) -> None:
        # one empty placeholder: an optimizer needs parameters, the scheduler only the param group
        super().__init__([torch.zeros(0, device=stack.device)], lr=lr, betas=(0.9, 0.999), eps=1e-8,
                         weight_decay=weight_decay, fused=fused)
        self.stack, self.slot, self.names = stack, slot, names

    @torch.no_grad()
    def step(self, closure=None) -> None:
        """Nothing: the group steps every slot at once (:func:`step_slots`)."""

    def _moments(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(exp_avg, exp_avg_sq)`` of each of the member's parameters, as views into the stack."""
        first = self.stack.slot_views(self.stack.exp_avg, self.slot)
        second = self.stack.slot_views(self.stack.exp_avg_sq, self.slot)
        return [pair for name in self.names for pair in zip(first[name], second[name], strict=True)]

    def state_dict(self) -> dict:
        """torch ``AdamW.state_dict()`` of the member's parameters (A and B of each layer at its own rank)."""
        return adamw_state(self._moments(), self.stack.steps[self.slot], self.param_groups[0])

    @torch.no_grad()
    def load_state_dict(self, state_dict: dict) -> None:
        """Read a torch ``AdamW.state_dict()`` of the member's parameters (as :meth:`state_dict` writes it)."""
        moments = self._moments()
        [group] = state_dict["param_groups"]
        if len(group["params"]) != len(moments):
            raise ValueError(f"optimizer state has {len(group['params'])} parameters, this member {len(moments)}")
        self.param_groups[0].update({key: value for key, value in group.items() if key != "params"})
        step = 0
        for i, (m, v) in enumerate(moments):
            entry = state_dict["state"].get(i)
            if entry is None:
                m.zero_()
                v.zero_()
                continue
            m.copy_(entry["exp_avg"])
            v.copy_(entry["exp_avg_sq"])
            step = int(entry["step"])
        self.stack.steps[self.slot] = step


def adamw_state(moments: list[tuple[torch.Tensor, torch.Tensor]], step: int, param_group: dict) -> dict:
    """torch ``AdamW.state_dict()`` of parameters whose ``(exp_avg, exp_avg_sq)`` are ``moments`` (copied), after
    ``step`` optimizer steps with ``param_group``'s settings (no state before the first, as torch)."""
    group = {key: value for key, value in param_group.items() if key != "params"}
    state = {i: {"step": torch.tensor(float(step)), "exp_avg": m.clone(), "exp_avg_sq": v.clone()}
             for i, (m, v) in enumerate(moments)} if step else {}
    return {"state": state, "param_groups": [{**group, "params": list(range(len(moments)))}]}


def step_slots(stack: SlotStack, due: list[tuple[int, dict, float]]) -> torch.Tensor:
    """Clip and step each ``(slot, param group, max_grad_norm)`` of ``due``, zero its gradients, leave the
    other slots as they are; returns the ``[S]`` column that is 0 for the stepped slots and 1 elsewhere."""
    # per slot: decay, 1 - beta1, 1 - beta2, -step size, sqrt(bias correction 2), eps, max norm, keep
    table = [[1.0, 0.0, 0.0, 0.0, 1.0, 1.0, math.inf, 1.0] for _ in range(stack.capacity)]
    for slot, group, max_norm in due:
        stack.steps[slot] += 1
        step, lr = stack.steps[slot], group["lr"]
        beta1, beta2 = group["betas"]
        # as torch's AdamW: bias corrections and step size in Python floats
        table[slot] = [1 - lr * group["weight_decay"], 1 - beta1, 1 - beta2, -lr / (1 - beta1 ** step),
                       (1 - beta2 ** step) ** 0.5, group["eps"], max_norm, 0.0]
    columns = to_device(torch.tensor(list(zip(*table, strict=True)), dtype=stack.dtype), stack.device)
    decay, weight1, weight2, step_size, correction2, eps, max_norm, keep = columns.unsqueeze(-1)
    weights, grads, exp_avg, exp_avg_sq = stack.buffers
    norms = torch.linalg.vector_norm(grads, dim=1, keepdim=True)
    grads.mul_((max_norm / (norms + CLIP_EPS)).clamp_(max=1.0))
    weights.mul_(decay)
    exp_avg.lerp_(grads, weight1)
    exp_avg_sq.lerp_(grads.square(), weight2)
    weights.addcdiv_(exp_avg * step_size, exp_avg_sq.sqrt().div_(correction2).add_(eps))
    grads.mul_(keep)
    return keep.view(-1)
