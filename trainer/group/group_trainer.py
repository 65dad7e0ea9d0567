"""The shared part of a group: one frozen base, one stacked forward and backward for all its trials.

Each step takes one micro-batch from every member, stacks them (``[rows of a | rows of b | ...]``,
right-padded to the longest), runs the base once with each member's adapter on its own rows
(:mod:`trainer.group.multi_lora`), and computes each member's loss from its own rows only: the
summed token cross-entropy over its label tokens divided by the label tokens of its optimizer
step, the Trainer's normalisation. The backward of the sum of those losses gives each adapter
exactly the gradient of its own loss, because no row belongs to two members and the frozen base
mixes no rows. Members then step their own optimizers (:class:`trainer.group.member.Member`).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch.nn import functional as F

from trainer.group.batches import IGNORE, MicroBatch, TrainOrder, stack
from trainer.group.member import Member
from trainer.group.multi_lora import Routing, Segment, attach_multi_lora, is_target, lora_scaling, peft_init
from trainer.spec import TrialSpec

HOST_INPUTS = "group::host_inputs"  # profiler range of the batch building on the CPU (bench/group_ops.py skips it)
# configurations whose logits are not lm_head(hidden): the loss here computes lm_head itself
LOGIT_CHANGES = ("final_logit_softcapping", "logit_scale", "logits_scaling")


class GroupTrainer:
    """Trials that share ``model``'s frozen weights; members join with :meth:`add` and leave with :meth:`remove`.

    ``targets`` is every module name any member may adapt (a member adapts its own
    ``lora.target_modules`` among them); ``matmul`` is ``"loop"`` or ``"bmm"``
    (:class:`trainer.group.multi_lora.Routing`); ``autocast`` a 16-bit dtype to train in mixed
    precision on a GPU, or None.
    """

    holds_adapters = False  # whether it can evaluate members later as they were (hold, evaluate_held, release)

    def __init__(self, model, pad_id: int, targets: list[str], matmul: str = "loop",
                 autocast: torch.dtype | None = None) -> None:
        changed = [name for name in LOGIT_CHANGES if getattr(model.config, name, None) not in (None, 1, 1.0)]
        if changed:
            raise ValueError(f"the grouped backend computes logits as lm_head(hidden); this model also sets {changed}")
        self.model, self.pad_id, self.autocast = model, pad_id, autocast
        self.device = next(model.parameters()).device
        self.routing = Routing(matmul)
        self.layers = attach_multi_lora(model, targets, self.routing)
        self.decoder = model.get_decoder()
        self.head = model.get_output_embeddings()
        self.members: list[Member] = []

    def add(self, spec: TrialSpec, order: TrainOrder, eval_data: list, events, started: float, faults=()) -> Member:
        """A new member with PEFT's initial adapter for its seed, in the first free slot."""
        lora = spec.lora
        layers, slot = self._adapted_layers(spec), self._free_slot()
        generator = None
        if lora.lora_dropout:
            generator = torch.Generator(self.device).manual_seed(spec.training.seed)
        scaling = lora_scaling(lora.r, lora.lora_alpha, lora.use_rslora)
        params = []
        for layer, (a, b) in zip(layers.values(), peft_init(layers, lora.r, spec.training.seed), strict=True):
            adapter = layer.add_adapter(slot, a, b, scaling, lora.lora_dropout, generator)
            params += [adapter.lora_A, adapter.lora_B]
        member = Member(spec, slot, params, order, eval_data, events, started, faults, generator)
        self.members.append(member)
        return member

    def _adapted_layers(self, spec: TrialSpec) -> dict:
        """The layers ``spec``'s adapter targets, in model order; a spec the group cannot train is a ValueError."""
        lora = spec.lora
        if lora.bias != "none":
            raise ValueError(f"lora.bias {lora.bias!r}: trained biases would change the shared base; use 'none'")
        layers = {name: layer for name, layer in self.layers.items() if is_target(name, lora.target_modules)}
        if not layers:
            raise ValueError(f"lora.target_modules {lora.target_modules} matches none of {list(self.layers)[:3]}...")
        return layers

    def _free_slot(self) -> int:
        return min(set(range(len(self.members) + 1)) - {m.slot for m in self.members})

    def remove(self, member: Member) -> None:
        """Take ``member`` out of the group: its adapters, optimizer state and slot are freed."""
        for layer in self.layers.values():
            if str(member.slot) in layer.adapters:
                layer.remove_adapter(member.slot)
        self.members.remove(member)

    def adapter_weights(self, member: Member) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{module name: (lora_A, lora_B)}`` of ``member``, in model order."""
        key = str(member.slot)
        return {name: (layer.adapters[key].lora_A, layer.adapters[key].lora_B)
                for name, layer in self.layers.items() if key in layer.adapters}

    def reserve(self, slots: int) -> None:
        """Room for ``slots`` members at once, made before they join (nothing to make here: adapters are per member)."""

    def checkpoint_state(self, member: Member) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """What :func:`trainer.group.checkpoint.snapshot` takes of ``member``'s weights: its adapter (its optimizer
        holds its moments)."""
        return self.adapter_weights(member)

    def train_step(self) -> list[tuple[Member, MicroBatch, torch.Tensor]]:
        """One forward and backward over a micro-batch of every member; the members step their optimizers after."""
        members = list(self.members)
        with torch.profiler.record_function(HOST_INPUTS):
            batches = [m.next_batch() for m in members]
            segments = _segments([m.slot for m in members], [(b.rows, b.length) for b in batches])
            ids, mask = stack([(b.input_ids, b.attention_mask) for b in batches], self.pad_id)
        targets = self._label_positions([b.labels for b in batches])
        self.model.train()
        with self.routing.route(segments), self._attending_segments(segments), self._autocast():
            hidden = self._hidden(ids, mask)
            losses = [self._summed_loss(hidden, s, t) / max(1, b.items)  # TRL clamps an empty count to 1
                      for s, t, b in zip(segments, targets, batches, strict=True)]
        torch.stack(losses).sum().backward()
        return [(m, b, loss.detach()) for m, b, loss in zip(members, batches, losses, strict=True)]

    @torch.no_grad()
    def evaluate(self, members: list[Member]) -> list[float]:
        """Eval loss of each of ``members``, its eval batches stacked with theirs (the Trainer's figure:
        each batch's token mean, weighted by its rows)."""
        sums = [0.0] * len(members)
        rows = [0] * len(members)
        self.model.eval()
        for i in range(max(len(m.eval_data) for m in members)):
            part = [(k, m) for k, m in enumerate(members) if i < len(m.eval_data)]
            batches = [members[k].eval_data[i] for k, _ in part]
            segments = _segments([m.slot for _, m in part], [ids.shape for ids, _, _ in batches])
            ids, mask = stack([(ids, mask) for ids, mask, _ in batches], self.pad_id)
            targets = self._label_positions([labels for _, _, labels in batches])
            with self.routing.route(segments), self._attending_segments(segments), self._autocast():
                hidden = self._hidden(ids, mask)
                means = [self._summed_loss(hidden, s, t) / max(1, t.shape[1])
                         for s, t in zip(segments, targets, strict=True)]
            for (k, _), mean, (ids_k, _, _) in zip(part, torch.stack(means).tolist(), batches, strict=True):
                sums[k] += mean * ids_k.shape[0]
                rows[k] += ids_k.shape[0]
        self.model.train()
        return [s / n for s, n in zip(sums, rows, strict=True)]

    def _hidden(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ids, mask = to_device(torch.stack([ids, mask]), self.device)
        return self.decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state

    def _label_positions(self, labels: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per batch, ``[row, position, label]`` of each token a label predicts (the label at position + 1).

        Found on the CPU and sent in one copy before the forward: looking them up on the GPU, or
        sending them one batch at a time after it, would wait for the forward each time.
        """
        parts = []
        for batch in labels:
            following = batch[:, 1:]
            rows, cols = (following != IGNORE).nonzero(as_tuple=True)
            parts.append(torch.stack([rows, cols, following[rows, cols]]))
        joined = to_device(torch.cat(parts, dim=1), self.device)
        return list(joined.split([p.shape[1] for p in parts], dim=1))

    def _summed_loss(self, hidden: torch.Tensor, s: Segment, targets: torch.Tensor) -> torch.Tensor:
        """Summed cross-entropy over the segment's label tokens; logits only where a label is."""
        rows, cols, labels = targets
        logits = self.head(hidden[s.start:s.stop, :s.length][rows, cols]).float()
        return F.cross_entropy(logits, labels, reduction="sum")

    def _attending_segments(self, segments: list[Segment]):
        """``loop``: each member's attention at its own length (:mod:`trainer.group.segment_attention`), so its
        gradients are those of its lone run bit for bit; ``bmm`` agrees to rounding and attends as one batch."""
        if self.routing.matmul != "loop" or len(segments) < 2:
            return nullcontext()
        from trainer.group.segment_attention import attending_by_segment

        return attending_by_segment(self.decoder.config, segments)

    def _autocast(self):
        if self.autocast is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast)


def new_group_trainer(model, pad_id: int, targets: list[str], matmul: str = "loop",
                      autocast: torch.dtype | None = None, **options) -> GroupTrainer:
    """A group trainer for ``matmul``: :class:`GroupTrainer` for ``"loop"`` and ``"bmm"``,
    :class:`trainer.group.stacked_trainer.StackedGroupTrainer` (with ``options``) for ``"stacked"``."""
    if matmul == "stacked":
        from trainer.group.stacked_trainer import StackedGroupTrainer

        return StackedGroupTrainer(model, pad_id, targets, autocast, **options)
    if options:
        raise ValueError(f"{sorted(options)}: options of the stacked matmul only, but matmul is {matmul!r}")
    return GroupTrainer(model, pad_id, targets, matmul, autocast)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor on ``device``; to a GPU from pinned memory without waiting for the work queued there."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def _segments(slots: list[int], shapes: list[tuple[int, int]]) -> list[Segment]:
    """Consecutive segments for batches of ``(rows, length)`` stacked in this order."""
    segments, start = [], 0
    for slot, (rows, length) in zip(slots, shapes, strict=True):
        segments.append(Segment(slot, start, start + rows, length))
        start += rows
    return segments
