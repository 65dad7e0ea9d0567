"""The stacked group step: as many kernels a step for K members as for one.

Each step stacks one micro-batch of every member in slot order, each padded to the same rows and
length (a member with fewer rows gets dummy rows: pad tokens, one attended position, no labels),
so that every adapted layer applies all members' adapters with two batched matmuls
(:mod:`trainer.group.stacked_lora`). The loss is one token cross-entropy over the label tokens of
the whole stack, summed per member and divided by the member's own label count (the Trainer's
normalisation); the backward of the members' sum gives each slot the gradient of its own loss.
Then one optimizer step clips and steps the slots whose window ended
(:func:`trainer.group.stacked_adamw.step_slots`), each with its own learning rate, step count,
weight decay and clipping norm. No part of the step loops over members on the device: the
kernels a step do not grow with K (``bench/group_ops.py`` counts them).

A member trains as it does alone up to rounding (the batched matmuls, norms and sums add in
another order than a lone run), not bit for bit; LoRA dropout is refused, as per-member masks
would cost kernels per member.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager, nullcontext
from typing import NamedTuple

import torch
from torch.nn import functional as F

from trainer.group.batches import IGNORE, TrainOrder
from trainer.group.chunked_loss import chunked_token_loss
from trainer.group.fused_rotary import rotating_by_halves
from trainer.group.group_trainer import HOST_INPUTS, GroupTrainer, to_device
from trainer.group.held_adapters import HeldAdapters
from trainer.group.member import Member, WindowLoss
from trainer.group.multi_lora import lora_scaling, peft_init
from trainer.group.packed_rows import PackedLayout, attending_packed, pack
from trainer.group.slot_copy import SlotCopy
from trainer.group.stacked_adamw import SlotOptimizer, step_slots
from trainer.group.stacked_lora import SlotStack, StackedRows
from trainer.group.step_graphs import LABEL_MULTIPLE, LENGTH_MULTIPLE, LONGEST_MULTIPLE, StepGraphs
from trainer.spec import TrialSpec

EVAL_TOKENS = 1 << 17  # tokens (padding included) of one evaluation forward: no gradients, so several steps' worth
EVAL_LOSS_CHUNK = 4096  # label tokens whose float32 logits an evaluation holds at once


class StackedGroupTrainer(GroupTrainer):
    """A :class:`trainer.group.group_trainer.GroupTrainer` whose members share stacked adapters and one optimizer step.

    ``length_multiple`` pads each step's length up to a multiple of it (fewer distinct shapes, for
    CUDA graphs or ``torch.compile``); ``compile_mode`` compiles the decoder with ``torch.compile``
    in that mode (``"reduce-overhead"``: CUDA graphs), or None; ``activation_checkpointing``
    recomputes each decoder layer's activations in the backward (memory for long rows or many trials);
    ``loss_chunk`` computes the loss through the output layer that many tokens at a time without
    keeping their logits (:mod:`trainer.group.chunked_loss`; memory for a large vocabulary), or None;
    ``packed`` lays each member's rows end to end without padding (:mod:`trainer.group.packed_rows`),
    else each row is padded to the step's longest row; ``cuda_graphs`` replays each step shape's kernels as
    a CUDA graph on a GPU when every slot of the stack trains (:mod:`trainer.group.step_graphs`);
    ``rotary_by_halves`` rotates queries and keys in four kernels each way (:mod:`trainer.group.fused_rotary`).
    """

    holds_adapters = True

    def __init__(self, model, pad_id: int, targets: list[str], autocast: torch.dtype | None = None,
                 length_multiple: int = 1, compile_mode: str | None = None,
                 activation_checkpointing: bool = False, loss_chunk: int | None = None,
                 packed: bool = True, cuda_graphs: bool = False, rotary_by_halves: bool = False) -> None:
        if length_multiple < 1:
            raise ValueError(f"length_multiple must be at least 1, but got {length_multiple=}")
        if loss_chunk is not None and loss_chunk < 1:
            raise ValueError(f"loss_chunk must be at least 1 (or None), but got {loss_chunk=}")
        if cuda_graphs and compile_mode is not None:
            raise ValueError(f"cuda_graphs and compile_mode {compile_mode!r}: choose one way to capture the step")
        if activation_checkpointing:
            _enable_checkpointing(model)
        super().__init__(model, pad_id, targets, "stacked", autocast)
        weight = next(model.parameters())
        # adapters train in float32 beside a 16-bit base, as PEFT keeps them (multi_lora.add_adapter)
        # (its layers compute in the autocast dtype: the copy that autocast would cast to at every layer, made once)
        self.stack = SlotStack(self.layers, self.device, torch.float64 if weight.dtype == torch.float64 else torch.float32,
                               autocast)
        self.length_multiple, self.loss_chunk, self.packed = length_multiple, loss_chunk, packed
        self.rotating = (lambda: rotating_by_halves(self.decoder)) if rotary_by_halves else nullcontext
        self.compiled = compile_mode is not None
        if self.compiled:
            self.decoder = torch.compile(self.decoder, mode=compile_mode, dynamic=False)
        # CUDA graphs of the training step, on a GPU (trainer.group.step_graphs)
        self.graphs = StepGraphs(self.device) if cuda_graphs else None
        self._indices: dict[tuple[int, ...], torch.Tensor] = {}
        self.held = HeldAdapters(self.stack)

    def add(self, spec: TrialSpec, order: TrainOrder, eval_data: list, events, started: float, faults=()) -> Member:
        """A new member with PEFT's initial adapter for its seed, in the first free slot of the stack."""
        lora, t = spec.lora, spec.training
        layers, slot = self._adapted_layers(spec), self._free_slot()
        if lora.lora_dropout:
            raise ValueError(f"lora.lora_dropout {lora.lora_dropout}: the stacked matmul trains without dropout; "
                             "set it to 0, or use matmul loop or bmm")
        optimizer = SlotOptimizer(self.stack, slot, list(layers), t.learning_rate, t.weight_decay,
                                  t.optim == "adamw_torch_fused" or None)
        member = Member(spec, slot, [], order, eval_data, events, started, faults, optimizer=optimizer)
        weights = dict(zip(layers, peft_init(layers, lora.r, t.seed), strict=True))
        self.stack.add(slot, weights, lora_scaling(lora.r, lora.lora_alpha, lora.use_rslora))
        self.members.append(member)
        return member

    def remove(self, member: Member) -> None:
        """Take ``member`` out: its slot's weights, gradients, moments and step count back to zero."""
        self.stack.clear(member.slot)
        self.members.remove(member)

    def adapter_weights(self, member: Member) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{module name: (lora_A, lora_B)}`` of ``member`` at its own rank: views into the stack."""
        return self.stack.slot_views(self.stack.weights, member.slot)

    def train_step(self) -> list[tuple[Member, object, WindowLoss | None]]:
        """One forward, backward and optimizer step for every member; each member's window loss once it stepped."""
        members = sorted(self.members, key=lambda m: m.slot)
        slots = [m.slot for m in members]
        graphed = self._graphed(len(members))
        with torch.profiler.record_function(HOST_INPUTS):
            batches = [m.next_batch() for m in members]
            parts = [(b.input_ids, b.attention_mask, b.labels) for b in batches]
            divisors = [b.items for b in batches]
            if graphed and len(slots) < self.stack.capacity:  # a graph has every slot: the empty ones without labels
                parts, divisors = self._every_slot(slots, parts, divisors)
                slots = list(range(self.stack.capacity))
            inputs = self._inputs(parts, divisors, static=graphed)
        rows = self._rows(slots)
        self.model.train()
        if graphed:
            owner = (self.stack.weights.data_ptr(), self.stack.scale.data_ptr(), self.stack.window_loss.data_ptr())
            self.graphs.run(inputs.key, inputs.host, lambda sent: self._forward_backward(inputs, sent, rows), owner)
        else:
            self._forward_backward(inputs, inputs.sent_to(self.device), rows)
        window = self.stack.window_loss
        due = [m for m, b in zip(members, batches, strict=True) if b.last]
        if not due:
            return [(m, b, None) for m, b in zip(members, batches, strict=True)]
        keep = step_slots(self.stack, [(m.slot, m.optimizer.param_groups[0], m.spec.training.max_grad_norm)
                                       for m in due])
        summed = window.clone()
        window.mul_(keep)
        return [(m, b, WindowLoss(summed, m.slot) if b.last else None)
                for m, b in zip(members, batches, strict=True)]

    def _graphed(self, members: int) -> bool:
        """Whether this step of ``members`` runs as a CUDA graph: with every slot of the stack training, and on while
        at least 7 in 8 do (the empty ones padded); below that, eager steps (the graphs' memory given back) until
        every slot trains again."""
        graphs, capacity = self.graphs, self.stack.capacity
        if graphs is None or graphs.failed is not None:  # none asked for, or given up: plain eager steps
            return False
        if members == capacity:
            graphs.active = True
        elif graphs.active and members * 8 < capacity * 7:
            graphs.active = False
            graphs.release()
        return graphs.active

    def _every_slot(self, slots: list[int], parts: list[tuple], divisors: list[int]) -> tuple[list, list]:
        """``parts`` and ``divisors`` of the members in ``slots`` with a part for every empty slot of the stack: one
        pad token with no label (its block's loss and its slot's gradients are zero; the slot's adapter is zero)."""
        empty = (torch.full((1, 1), self.pad_id), torch.ones((1, 1), dtype=torch.long), torch.full((1, 1), IGNORE))
        mine = dict(zip(slots, zip(parts, divisors, strict=True), strict=True))
        every = [mine.get(slot, (empty, 1)) for slot in range(self.stack.capacity)]
        return [part for part, _ in every], [divisor for _, divisor in every]

    def _forward_backward(self, inputs: StepInputs, sent: list[torch.Tensor], rows: StackedRows) -> None:
        """The step's forward and backward on ``inputs`` (its host tensors ``sent`` to the device): gradients into
        the stack's, each block's loss into its slot's window loss. No host work waits on the GPU (a CUDA graph)."""
        ids, targets, layout = inputs.on_device(*sent)
        self.stack.refresh()  # the layers' compute copy of the weights the optimizer stepped
        # the backward too: gradient checkpointing runs the layers again in it
        with self.routing.stack(rows), self._attending(layout):
            with self._autocast():
                losses = self._losses(ids, targets, rows.count)
            with _flat_gradients():
                losses.sum().backward()
        self.stack.fold_gradients()
        if rows.index is None:
            self.stack.window_loss.add_(losses.detach())
        else:
            self.stack.window_loss.index_add_(0, rows.index, losses.detach())

    def evaluate(self, members: list[Member]) -> list[float]:
        """Eval loss of each of ``members`` (each batch's token mean, weighted by its rows): every eval batch of
        every member stacked in as few forwards as ``EVAL_TOKENS`` allows (a member's batches go through its
        own adapter, each as a block of its own)."""
        self.stack.refresh()
        return self._evaluate([(m.slot, m.eval_data) for m in members], self.stack.scale)

    def reserve(self, slots: int) -> None:
        """Slots for ``slots`` members at once: the stack is made that large now, not one slot larger at each of
        the first joins (each a new copy of the whole stack: at rank 128 a SmolLM2 slot is 156 MB a buffer)."""
        self.stack.grow(slots, self.stack.rank)

    def checkpoint_state(self, member: Member) -> SlotCopy:
        """``member``'s weights and AdamW moments for its checkpoint, copied behind the queued work."""
        return SlotCopy(self.stack, member.slot, member.optimizer.param_groups[0])

    def hold(self, member: Member) -> int:
        """Copy ``member``'s adapter as it is now (at its eval point) for :meth:`evaluate_held`; the held row."""
        return self.held.hold(member.slot)

    def release(self, row: int) -> None:
        self.held.release(row)

    def evaluate_held(self, held: list[tuple[int, list]]) -> list[float]:
        """Eval loss of each ``(held row, eval batches)`` as :meth:`evaluate` gives it for the adapter when held."""
        with self.held.reading():
            return self._evaluate(held, self.held.scale)

    @torch.no_grad()
    def _evaluate(self, evaluands: list[tuple[int, list]], scale: torch.Tensor) -> list[float]:
        """Eval loss of each ``(row of the stack, eval batches)``; ``scale``: the LoRA scalings of the stack's rows."""
        sums, rows = [0.0] * len(evaluands), [0] * len(evaluands)
        parts = sorted([(row, k, batch) for k, (row, data) in enumerate(evaluands) for batch in data],
                       key=lambda part: part[0])  # stable: each member's batches keep their order
        self.model.eval()
        for chunk in _token_chunks(parts, EVAL_TOKENS):
            batches = [batch for _, _, batch in chunk]
            with torch.profiler.record_function(HOST_INPUTS):
                counts = [int((labels[:, 1:] != IGNORE).sum()) for _, _, labels in batches]
                inputs = self._inputs(batches, counts)
            ids, targets, layout = inputs.on_device(*inputs.sent_to(self.device))
            with self.routing.stack(self._rows([row for row, _, _ in chunk], scale)), self._attending(layout), \
                    self._autocast():
                means = self._losses(ids, targets, len(chunk)).tolist()
            for (_, k, (ids_k, _, _)), mean in zip(chunk, means, strict=True):
                sums[k] += mean * ids_k.shape[0]
                rows[k] += ids_k.shape[0]
        self.model.train()
        return [s / n for s, n in zip(sums, rows, strict=True)]

    def _inputs(self, parts: list[tuple[torch.Tensor, ...]], divisors: list[int], static: bool = False) -> StepInputs:
        """The step's inputs on the host (:class:`StepInputs`) from ``(ids, mask, labels)`` per member and each
        member's divisor (its loss is its summed token loss over it). ``static``: padded to few shapes for a CUDA
        graph (:mod:`trainer.group.step_graphs`): the pack length and the attention's rows to multiples, the label
        tokens to a multiple with entries that have no label (a zero loss and gradient)."""
        multiple = max(self.length_multiple, LENGTH_MULTIPLE) if static else self.length_multiple
        if self.packed:
            packed = pack([(ids, mask) for ids, mask, _ in parts], self.pad_id, multiple,
                          LONGEST_MULTIPLE if static else 1)
            ids, second, layout = packed.ids, packed.positions, packed.layout
        else:
            (ids, second), layout = self._padded([(ids, mask) for ids, mask, _ in parts], multiple), None
        rows = 1 if self.packed else max(part[0].shape[0] for part in parts)
        positions = []
        for k, (_, _, labels) in enumerate(parts):
            following = labels[:, 1:]
            row, col = (following != IGNORE).nonzero(as_tuple=True)
            label = following[row, col]
            if self.packed:  # a label's token is in pack k, after the rows before its own
                row, col = torch.zeros_like(row), col + packed.starts[k][row]
            positions.append(torch.stack([torch.full_like(row, k), torch.arange(len(row)), row + k * rows, col,
                                          label]))
        most = max(p.shape[1] for p in positions)
        if static:  # entries at place ``most`` (no member has as many label tokens as its tokens): summed by none
            most = ids.shape[1] * rows
            extra = -sum(p.shape[1] for p in positions) % LABEL_MULTIPLE
            positions.append(torch.tensor([0, most, 0, 0, 0])[:, None].expand(5, extra))
        joined = torch.cat(positions, dim=1)
        tail = [torch.tensor(divisors)] + ([layout.grid, layout.back] if layout is not None else [])
        sent = torch.cat([joined.reshape(-1)] + tail)
        shape = (joined.shape[1], len(divisors), most, layout.rows if layout else 0, layout.longest if layout else 0)
        return StepInputs(torch.stack([ids, second]), sent, shape)

    def _padded(self, parts: list[tuple[torch.Tensor, torch.Tensor]], multiple: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``input_ids`` and ``attention_mask`` ``[count * rows, length]``: each member's rows padded to the same
        rows (dummy rows attend to one position: a row attending to none gives NaN in some kernels) and length
        (a multiple of ``multiple``)."""
        count = len(parts)
        rows = max(ids.shape[0] for ids, _ in parts)
        length = math.ceil(max(ids.shape[1] for ids, _ in parts) / multiple) * multiple
        ids = torch.full((count, rows, length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((count, rows, length), dtype=torch.long)
        mask[:, :, 0] = 1
        for k, (ids_k, mask_k) in enumerate(parts):
            n, width = ids_k.shape
            ids[k, :n, :width], mask[k, :n, :width] = ids_k, mask_k
        return ids.view(-1, length), mask.view(-1, length)

    def _hidden(self, ids: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """The decoder's last hidden states (inputs on the device): of the padded rows (``second``: attention mask)
        or of the packs (``second``: position ids; the attention is :func:`trainer.group.packed_rows.packed_attention`)."""
        with self.rotating():
            if not self.packed:
                return self.decoder(input_ids=ids, attention_mask=second, use_cache=False).last_hidden_state
            return self.decoder(input_ids=ids, position_ids=second, use_cache=False).last_hidden_state

    def _attending(self, layout: PackedLayout | None):
        return nullcontext() if layout is None else attending_packed(self.decoder.config, layout)

    def _losses(self, ids: torch.Tensor, targets: tuple, count: int) -> torch.Tensor:
        """Each member's summed token cross-entropy over its label tokens divided by its divisor, as ``[count]``
        (``ids``: the input ids and the position ids or attention mask, stacked)."""
        (member, place, row, col, label), divisors, most = targets
        if self.compiled:  # a new step: CUDA graphs may reuse the last step's output memory
            torch.compiler.cudagraph_mark_step_begin()
        hidden = self._hidden(ids[0], ids[1])[row, col]
        if self.loss_chunk is None and torch.is_grad_enabled():
            token = F.cross_entropy(self.head(hidden).float(), label, reduction="none")
        else:  # an evaluation forward holds many batches: their logits a chunk at a time (a 128k vocabulary)
            token = chunked_token_loss(hidden, self.head.weight, getattr(self.head, "bias", None), label,
                                       self.loss_chunk or EVAL_LOSS_CHUNK)
        # each member's token losses in a row of their own, then summed along it: the same sums on every run
        # (index_add's atomic adds on a GPU land in any order)
        # (place ``most``: a padded step's entries without a label, summed by no member)
        summed = token.new_zeros(count, most + 1).index_put((member, place), token)[:, :most].sum(1)
        return summed / divisors.clamp(min=1)

    def _rows(self, slots: list[int], scale: torch.Tensor | None = None) -> StackedRows:
        """The layout of a batch stacked in ``slots``' order (already sorted); ``scale``: the scalings of the rows
        that ``slots`` index (default: the stack's slots)."""
        scale = self.stack.scale if scale is None else scale
        if slots == list(range(len(scale))):
            return StackedRows(len(slots), None, scale.view(-1, 1, 1))
        key = tuple(slots)
        if key not in self._indices:
            if len(self._indices) > 64:  # slot sets seen come and go with the members
                self._indices.clear()
            self._indices[key] = to_device(torch.tensor(slots), self.device)
        index = self._indices[key]
        return StackedRows(len(slots), index, scale.index_select(0, index).view(-1, 1, 1))


class StepInputs(NamedTuple):
    """A step's inputs on the host: ``ids`` (``[2, rows, length]``: the input ids and the position ids of the packs
    or the attention mask of the padded rows) and ``sent`` (one flat tensor: ``(member, its n-th token, row,
    position, label)`` of every label token, each member's divisor, then the packed attention layout), and
    ``shape`` (sizes of the parts of ``sent``: label entries, members, the most label tokens of a member, the
    attention's rows and their length). ``key``: what a CUDA graph of the step is captured for."""

    ids: torch.Tensor
    sent: torch.Tensor
    shape: tuple[int, int, int, int, int]

    @property
    def host(self) -> list[torch.Tensor]:
        return [self.ids, self.sent]

    def sent_to(self, device: torch.device) -> list[torch.Tensor]:
        """:attr:`host` on ``device`` (from pinned memory to a GPU, not waiting for the work queued there)."""
        return [to_device(t, device) for t in self.host]

    @property
    def key(self) -> tuple:
        return tuple(self.ids.shape) + self.shape

    def on_device(self, ids: torch.Tensor, sent: torch.Tensor) -> tuple:
        """``(ids, (label entries [5, n], divisors, most), layout or None)`` from the device copies of :attr:`host`."""
        n, d, most, rows, longest = self.shape
        targets = (sent[:5 * n].view(5, -1), sent[5 * n:5 * n + d], most)
        if not rows:
            return ids, targets, None
        grid = sent[5 * n + d:5 * n + d + rows * longest]
        return ids, targets, PackedLayout(grid, sent[5 * n + d + rows * longest:], rows, longest)


def _token_chunks(parts: list[tuple], most: int) -> list[list[tuple]]:
    """``(slot, member, (ids, mask, labels))`` parts in order, cut into runs of at most ``most`` padded tokens
    (at least one part a run)."""
    chunks, tokens = [[]], 0
    for part in parts:
        size = part[2][0].numel()
        if chunks[-1] and tokens + size > most:
            chunks.append([])
            tokens = 0
        chunks[-1].append(part)
        tokens += size
    return chunks


def _enable_checkpointing(model) -> None:
    """Non-reentrant activation checkpointing of ``model``'s decoder layers (the layers run again in the backward,
    inside the step's routing), by transformers' name for it in this version."""
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


@contextmanager
def _flat_gradients():
    """Where autograd adds gradients into views of the stack's flat gradient buffer: torch warns (once) that such
    a view, strided like its parameter, breaks its layout contract; it is meant (torch >= 2.12 can be told so)."""
    if hasattr(torch.autograd, "enforce_grad_layout_policy"):
        with torch.autograd.enforce_grad_layout_policy(False):
            yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")
        yield
