"""A stacked member's checkpoint state copied to the CPU behind the group's queued work, without waiting for it.

A checkpoint holds the member's adapter and AdamW moments. Read layer by layer from the stack they
are a few hundred small device-to-host copies, each of which waits for the GPU to finish what is
queued (about 80 ms a checkpoint for a rank-128 SmolLM2 member, at every eval point of every member,
while the whole group waits). Here the slot's three rows of the flat stack (weights, first and second
moment) are copied in three asynchronous copies into pinned memory, ordered on the stream before the
next step changes them; the checkpoint thread waits for them and cuts the layers out on the CPU.

    copied = SlotCopy(stack, slot, optimizer)   # on the training thread: queued, returns at once
    ...
    copied.weights(), copied.optimizer_state()  # on the writer's thread: waits for the copies first
"""

from __future__ import annotations

import torch

from trainer.group.stacked_adamw import adamw_state
from trainer.group.stacked_lora import SlotStack


class SlotCopy:
    """Slot ``slot``'s weights and AdamW moments as they are now, in torch ``AdamW``'s and PEFT's layouts."""

    def __init__(self, stack: SlotStack, slot: int, param_group: dict) -> None:
        self.stack, self.rank = stack, stack.ranks[slot]
        self.names, self.step = list(stack.adapted[slot]), stack.steps[slot]
        self.group = dict(param_group)  # as it is now: the schedule moves its learning rate on
        cuda = stack.device.type == "cuda"
        # the slot's numbers at its own rank: the start of its row, laid out as a stack's row at that rank
        self.rows = torch.empty(3, stack.width(self.rank), dtype=stack.dtype, pin_memory=cuda)
        for row, flat in zip(self.rows, (stack.weights, stack.exp_avg, stack.exp_avg_sq), strict=True):
            row.copy_(flat[slot, :len(row)].detach(), non_blocking=cuda)
        self.done = torch.cuda.Event() if cuda else None
        if self.done is not None:
            self.done.record()

    def _layers(self, row: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{layer name: (A, B)}`` of the layers the member adapts, at its own rank, as views of row ``row``
        (0: weights, 1 and 2: AdamW's moments) once the copies have landed."""
        if self.done is not None:
            self.done.synchronize()
        return self.stack.cut(self.rows[row:row + 1], 0, self.rank, self.rank, self.names)

    def weights(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{layer name: (lora_A, lora_B)}``, as :meth:`trainer.group.stacked_trainer.StackedGroupTrainer.adapter_weights`."""
        return {name: (a.clone(), b.clone()) for name, (a, b) in self._layers(0).items()}

    def optimizer_state(self) -> dict:
        """torch ``AdamW.state_dict()`` of the member's parameters, as
        :meth:`trainer.group.stacked_adamw.SlotOptimizer.state_dict` gives it."""
        first, second = self._layers(1), self._layers(2)
        return adamw_state([pair for name in first for pair in zip(first[name], second[name], strict=True)],
                           self.step, self.group)
