"""AdamW and gradient clipping for every slot of a stack at once, each slot with its own hyperparameters.

:func:`step_slots` is torch's ``AdamW`` (``adamw_torch``: decoupled weight decay, betas and eps
of the slot's param group) and ``clip_grad_norm_`` (the slot's ``max_grad_norm`` over its own
parameters), run over each due slot's own numbers in the stack's flat tensors (the start of its row,
at its own rank): one ``_foreach_norm`` for all of them, then torch's fused AdamW kernel a slot, with
the slot's learning rate (its own schedule's value), step count for the bias correction (members join
at different steps), weight decay and clipping factor. A slot whose optimizer step is not due
(gradient accumulation) or that is empty keeps its weights, moments and gradients. A slot of rank 8
in a stack whose largest is 128 costs a sixteenth of it.

Each member keeps a :class:`SlotOptimizer`: a torch ``AdamW`` whose param group carries its
hyperparameters and which its learning-rate scheduler drives as usual, and whose state is its
slot of the stack, read and written in torch's own ``AdamW`` format, so its checkpoint is the one
a member of a ``loop`` group writes (and each can resume the other's).
"""

from __future__ import annotations

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
    other slots as they are; returns the ``[S]`` column that is 0 for the stepped slots and 1 elsewhere.

    Each slot's numbers at its own rank (the start of its row: :meth:`SlotStack.views`): the norms in one
    ``_foreach_norm``, then torch's fused AdamW kernel for each slot with its own learning rate, betas, eps and
    weight decay, which divides the gradients by the slot's ``grad_scale``, here the inverse of
    ``clip_grad_norm_``'s factor ``min(1, max_norm / (norm + 1e-6))``."""
    keep = [1.0] * stack.capacity
    for slot, _, _ in due:
        stack.steps[slot] += 1
        keep[slot] = 0.0
    host = [*keep, *(float(stack.steps[slot]) for slot, _, _ in due), *(max_norm for _, _, max_norm in due)]
    columns = to_device(torch.tensor(host, dtype=torch.float32), stack.device)
    n = stack.capacity
    keep, steps, max_norms = columns[:n], columns[n:n + len(due)], columns[n + len(due):]
    weights, grads, exp_avg, exp_avg_sq = ([stack.numbers(flat, slot).view(-1) for slot, _, _ in due]
                                           for flat in stack.buffers)
    norms = torch.stack(torch._foreach_norm(grads)).to(torch.float32)
    inverse = (norms + CLIP_EPS).div_(max_norms).clamp_(min=1.0)
    for i, (_, group, _) in enumerate(due):
        beta1, beta2 = group["betas"]
        torch._fused_adamw_([weights[i]], [grads[i]], [exp_avg[i]], [exp_avg_sq[i]], [], [steps[i]],
                            lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"],
                            eps=group["eps"], amsgrad=False, maximize=False, grad_scale=inverse[i], found_inf=None)
    torch._foreach_zero_(grads)
    return keep
