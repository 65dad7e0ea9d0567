"""A frozen ``nn.Linear`` with several LoRA adapters, each applied to its own rows of one stacked batch.

A group step stacks the micro-batches of K trials along the batch dimension,
``[rows of trial a | rows of trial b | ...]``, and runs the shared frozen base once. Every adapted
layer then adds each trial's own low-rank update to that trial's rows only::

    routing = Routing()
    layers = attach_multi_lora(model, ["q_proj", "v_proj"], routing)
    for layer, (a, b) in zip(layers.values(), peft_init(layers, r=8, seed=3407)):
        layer.add_adapter(0, a, b, scaling=16 / 8)
    with routing.route([Segment(slot=0, start=0, stop=4, length=37)]):
        model(input_ids, attention_mask=mask)

A :class:`Segment` also names the trial's own padded length: the adapter sees exactly the tensor the
trial would see training alone (its rows, its length), so its gradients are those of a lone run.

Two ways to compute the segments (``Routing.matmul``): ``"loop"``, one pair of matmuls per segment,
the same operations as PEFT's ``lora_B(lora_A(x)) * scaling`` and so bit-identical to a lone run; and
``"bmm"``, two ``torch.bmm`` over the segments' rows (whole padded length) and ranks padded with zeros
to the largest, fewer kernel launches but a different summation order (equal to rounding error).
A third, ``"stacked"``, keeps no per-trial adapters here: every slot's weights live in one stacked
pair per layer (:mod:`trainer.group.stacked_lora`, set as :attr:`MultiLoraLinear.stack`) and a step
routes equal blocks of rows with :meth:`Routing.stack`.
"""

from __future__ import annotations

import functools
import math
from contextlib import contextmanager
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

if TYPE_CHECKING:
    from trainer.group.parked import LayerBlocks
    from trainer.group.stacked_lora import LayerStack, StackedRows

MATMULS = ("loop", "bmm", "stacked")


class Segment(NamedTuple):
    """Rows ``start:stop`` of the stacked batch belong to adapter ``slot``; its own batch is ``length`` tokens long."""

    slot: int
    start: int
    stop: int
    length: int


class Routing:
    """Which rows of the next forward belong to which adapter; one object shared by every layer of a model."""

    def __init__(self, matmul: str = "loop") -> None:
        if matmul not in MATMULS:
            raise ValueError(f"matmul must be one of {MATMULS}, but got {matmul=}")
        self.matmul = matmul
        self.segments: tuple[Segment, ...] = ()
        self.stacked: StackedRows | None = None

    @contextmanager
    def stack(self, rows: StackedRows):
        """Within the block, forwards take the batch as equal blocks of rows, block k for adapter slot
        ``rows.index[k]`` (``matmul="stacked"``: :class:`trainer.group.stacked_lora.StackedRows`)."""
        saved = self.stacked
        self.stacked = rows
        try:
            yield
        finally:
            self.stacked = saved

    @contextmanager
    def route(self, segments: list[Segment]):
        """Within the block, forwards apply each segment's adapter to its rows (the others get the base only)."""
        saved = self.segments
        self.segments = tuple(segments)
        try:
            yield
        finally:
            self.segments = saved


class LoraAdapter(nn.Module):
    """One trial's ``lora_A`` (r x in) and ``lora_B`` (out x r) of one layer, with its scaling and dropout.

    Dropout draws from the trial's own ``generator``, so its masks do not depend on who else is in the group.
    """

    def __init__(self, a: torch.Tensor, b: torch.Tensor, scaling: float, dropout: float = 0.0,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if a.shape[0] != b.shape[1]:
            raise ValueError(f"lora_A is {tuple(a.shape)} but lora_B is {tuple(b.shape)}: their ranks differ")
        self.lora_A = nn.Parameter(a)
        self.lora_B = nn.Parameter(b)
        self.scaling = scaling
        # the same number on the adapter's device, for the batched path (no host-to-device copy per forward)
        self.register_buffer("scale", torch.tensor(float(scaling), dtype=a.dtype, device=a.device), persistent=False)
        self.dropout = dropout
        self.generator = generator

    @property
    def r(self) -> int:
        return self.lora_A.shape[0]

    def drop(self, x: torch.Tensor) -> torch.Tensor:
        if not self.dropout or not self.training:
            return x
        keep = torch.empty_like(x).bernoulli_(1.0 - self.dropout, generator=self.generator)
        return x * keep / (1.0 - self.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # PEFT's order of operations: lora_B(lora_A(dropout(x))) * scaling
        return F.linear(F.linear(self.drop(x), self.lora_A), self.lora_B) * self.scaling


class MultiLoraLinear(nn.Module):
    """A frozen base layer plus adapters keyed by slot; :class:`Routing` says which rows each one gets."""

    def __init__(self, base: nn.Module, routing: Routing) -> None:
        super().__init__()
        self.base_layer = base
        self.routing = routing
        self.adapters = nn.ModuleDict()
        self.in_features, self.out_features = base.in_features, base.out_features
        self.stack: LayerStack | None = None  # every slot's adapter at once, in a stacked group
        self.blocks: LayerBlocks | None = None  # finished members' adapters, a block of rows each (generation)

    def add_adapter(self, slot: int, a: torch.Tensor, b: torch.Tensor, scaling: float, dropout: float = 0.0,
                    generator: torch.Generator | None = None) -> LoraAdapter:
        if str(slot) in self.adapters:
            raise ValueError(f"slot {slot} already holds an adapter")
        weight = self.base_layer.weight
        device = weight.device
        # adapters train in float32 beside a 16-bit base, as PEFT keeps them (autocast_adapter_dtype)
        dtype = weight.dtype if weight.dtype == torch.float64 else torch.float32
        adapter = LoraAdapter(a.to(device, dtype), b.to(device, dtype), scaling, dropout, generator)
        self.adapters[str(slot)] = adapter
        return adapter

    def remove_adapter(self, slot: int) -> None:
        del self.adapters[str(slot)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        routing = self.routing
        if self.blocks is not None:
            return self.blocks.forward(x, result)
        if self.stack is not None:
            return result if routing.stacked is None else self.stack.forward(x, result, routing.stacked)
        segments = [s for s in routing.segments if str(s.slot) in self.adapters]
        if not segments:
            return result
        dtype = result.dtype
        if routing.matmul == "bmm" and len(segments) > 1:
            return self._bmm(x, result, segments).to(dtype)
        if len(segments) == 1 and _covers(segments[0], x):
            # a lone trial: exactly PEFT's `result = result + lora_B(lora_A(dropout(x))) * scaling`
            s = segments[0]
            return (result + self._adapter(s.slot)(self._cast(x, s.slot))).to(dtype)
        deltas = [self._adapter(s.slot)(self._cast(x[s.start:s.stop, :s.length], s.slot)) for s in segments]
        return (result + _assemble(result, segments, deltas)).to(dtype)

    def _adapter(self, slot: int) -> LoraAdapter:
        return self.adapters[str(slot)]

    def _cast(self, x: torch.Tensor, slot: int) -> torch.Tensor:
        return x.to(self._adapter(slot).lora_A.dtype)

    def _bmm(self, x: torch.Tensor, result: torch.Tensor, segments: list[Segment]) -> torch.Tensor:
        """Two batched matmuls over all segments: rows padded to the longest segment, ranks to the largest."""
        adapters = [self._adapter(s.slot) for s in segments]
        rank = max(a.r for a in adapters)
        rows = [self._dropped(a, x, s).flatten(0, -2) for a, s in zip(adapters, segments, strict=True)]
        stacked = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True) if len({len(r) for r in rows}) > 1 \
            else torch.stack(rows)
        a = torch.stack([F.pad(ad.lora_A, (0, 0, 0, rank - ad.r)) for ad in adapters])
        b = torch.stack([F.pad(ad.lora_B, (0, rank - ad.r)) for ad in adapters])
        scaling = torch.stack([ad.scale for ad in adapters])
        delta = torch.bmm(torch.bmm(stacked, a.transpose(1, 2)), b.transpose(1, 2)) * scaling[:, None, None]
        n = segments[0].stop - segments[0].start
        if x.shape[0] == n * len(segments) and all(s.start == i * n and s.stop == s.start + n
                                                   for i, s in enumerate(segments)):
            return result + delta.view(result.shape)  # the segments tile the batch in order: a view
        shape = result.shape[1:]
        pieces = [delta[k, :(s.stop - s.start) * shape[:-1].numel()].view(-1, *shape) for k, s in enumerate(segments)]
        return result + _assemble(result, segments, pieces)

    def _dropped(self, adapter: LoraAdapter, x: torch.Tensor, s: Segment) -> torch.Tensor:
        """The segment's rows over the whole padded length, with the dropout masks a lone run draws
        (over the trial's own length; the padding after it stays zero)."""
        rows = self._cast(x[s.start:s.stop], s.slot)
        if not adapter.dropout or not adapter.training:
            return rows
        return F.pad(adapter.drop(rows[:, :s.length]), (0, 0, 0, rows.shape[1] - s.length))


def _assemble(result: torch.Tensor, segments: list[Segment], deltas: list[torch.Tensor]) -> torch.Tensor:
    """One tensor shaped like ``result`` holding each segment's delta on its rows and zeros elsewhere.

    Built with one ``torch.cat``: adding segment by segment in place would make autograd copy the
    whole output once per segment in the backward (K segments, K full copies).
    """
    pieces, row = [], 0
    length = result.shape[1]
    dtype = torch.promote_types(result.dtype, deltas[0].dtype)  # as `result + delta` of a lone trial
    for s, delta in zip(segments, deltas, strict=True):
        if s.start > row:  # rows of trials without an adapter on this layer
            pieces.append(result.new_zeros(s.start - row, *result.shape[1:], dtype=dtype))
        delta = delta.to(dtype)
        pieces.append(F.pad(delta, (0, 0, 0, length - delta.shape[1])) if delta.shape[1] < length else delta)
        row = s.stop
    if row < result.shape[0]:
        pieces.append(result.new_zeros(result.shape[0] - row, *result.shape[1:], dtype=dtype))
    return torch.cat(pieces)


def _covers(segment: Segment, x: torch.Tensor) -> bool:
    return segment.start == 0 and segment.stop == x.shape[0] and segment.length >= x.shape[1]


def is_target(name: str, targets: list[str]) -> bool:
    """PEFT's rule for a list of ``target_modules``: the whole name or its last dotted parts."""
    return name in targets or any(name.endswith(f".{t}") for t in targets)


def attach_multi_lora(model: nn.Module, targets: list[str], routing: Routing) -> dict[str, MultiLoraLinear]:
    """Freeze ``model`` and wrap every targeted linear layer; returns the wrappers by module name, in model order."""
    for p in model.parameters():
        p.requires_grad_(False)
    names = [name for name, module in model.named_modules() if is_target(name, targets)
             and hasattr(module, "in_features") and hasattr(module, "out_features")]
    if not names:
        raise ValueError(f"no linear layer of the model matches lora.target_modules {targets}")
    layers = {}
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        layers[name] = MultiLoraLinear(getattr(parent, child), routing)
        setattr(parent, child, layers[name])
    return layers


def peft_init(layers: dict[str, MultiLoraLinear], r: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Initial ``(lora_A, lora_B)`` of each layer, the numbers ``torch.manual_seed(seed); get_peft_model(...)`` draws.

    PEFT builds ``nn.Linear(in, r)`` and ``nn.Linear(r, out)`` per layer in model order (each
    drawing its default kaiming-uniform weights), then draws A again with kaiming-uniform
    (``a=sqrt(5)``) and sets B to zero. The same draws from a private generator leave the global
    random state alone. The trials of a study share their seed, so the draws are kept per shapes,
    rank and seed (0.2 s on a CPU for SmolLM2 at rank 128, at every join); each call gets its own copy.
    """
    drawn = _drawn_a(tuple((layer.in_features, layer.out_features) for layer in layers.values()), r, seed)
    return [(a.clone(), torch.zeros(layer.out_features, r)) for a, layer in zip(drawn, layers.values(), strict=True)]


@functools.lru_cache(maxsize=8)
def _drawn_a(shapes: tuple[tuple[int, int], ...], r: int, seed: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    drawn = []
    for n_in, n_out in shapes:
        a = torch.empty(r, n_in)
        nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)
        nn.init.kaiming_uniform_(torch.empty(n_out, r), a=math.sqrt(5), generator=generator)
        nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)
        drawn.append(a)
    return tuple(drawn)


def lora_scaling(r: int, alpha: float, use_rslora: bool) -> float:
    """``alpha / r``, or ``alpha / sqrt(r)`` with rank-stabilised LoRA (PEFT's rule)."""
    return alpha / math.sqrt(r) if use_rslora else alpha / r
