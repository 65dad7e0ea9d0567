"""A stacked group's training step replayed as a CUDA graph: its thousands of kernels launched in one call.

A stacked step of a small model launches about 8,000 kernels (the decoder's, forward and backward,
and every adapted layer's two batched matmuls); on the H200's host each costs some 40 us of Python
and launch, so a step of 32 SmolLM2 trials took 0.38 s where the GPU worked 0.21 s. A CUDA graph
records the step's kernels once and launches them all again with one call (``graph.replay()``).

A graph replays fixed shapes at fixed addresses. The trainer pads each step's inputs to few shapes
(``StackedGroupTrainer._inputs(static=True)``: the pack length and the attention's rows to
multiples, the label tokens to a multiple of ``LABEL_MULTIPLE`` with entries that have no label,
whose loss and gradient are zero) and hands :meth:`StepGraphs.run` the step as a function of its
device inputs. The first ``WARMUP`` steps run eagerly (cuBLAS, cuDNN and autograd set themselves
up); after them a shape seen for the first time is captured (recording runs nothing) and replayed,
and later steps of that shape copy their inputs into the graph's own and replay it. All graphs
share one memory pool: they never run at once, and each one's tensors live only during its replay
(the step writes its results into the stack's buffers, which are outside the pool).

The graphs hold the addresses of the stack's buffers and of the trainer's weights: :meth:`release`
drops them when those change (the stack grows). A capture that fails, or after which less than a
fifth of the card's memory is free (the pool keeps each captured step's activations, beside what
evaluations and samples allocate), leaves the trainer eager from then on, its graphs' memory given
back (the step runs eagerly; a capture runs nothing).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable

import torch

from trainer.group.group_trainer import to_device

LABEL_MULTIPLE = 2048  # label tokens of a captured step are padded to a multiple of this
LENGTH_MULTIPLE = 64  # packed length of a captured step: a multiple of this
LONGEST_MULTIPLE = 32  # the attention's right-padded rows of a captured step: a multiple of this
WARMUP = 2  # eager steps before the first capture
FREE_AFTER_CAPTURE = 0.2  # share of the card's memory left free after a capture; less: the graphs are given up

log = logging.getLogger(__name__)


class StepGraphs:
    """One CUDA graph per input shape of a step, captured on its first step after the warm-up; on a CPU ``device``
    the steps run eagerly (padded as for a graph)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.graphs: dict[Hashable, tuple[torch.cuda.CUDAGraph, list[torch.Tensor]]] = {}
        self.pool = None
        self.owner: Hashable = None
        self.steps = 0
        self.failed: str | None = None
        self.captures = self.replays = 0
        self.reserved_mib = 0  # the most memory the allocator held right after a capture (the graphs' pool in it)
        self.shapes: set[Hashable] = set()  # every step shape it was given
        self.active = False  # whether the trainer's steps go through it (its choice, by the members a step)

    def release(self) -> None:
        """Drop every graph (what they read and write has moved, or eager steps need their memory) and give their
        memory pool back to the allocator."""
        had = bool(self.graphs)
        self.graphs.clear()
        self.pool = None
        if had:
            torch.cuda.empty_cache()

    def run(self, key: Hashable, inputs: list[torch.Tensor], step: Callable[[list[torch.Tensor]], None],
            owner: Hashable) -> None:
        """Run ``step`` on ``inputs`` (CPU tensors; ``step`` gets them on the device) as the graph of shape ``key``:
        replayed if captured, captured and replayed if not, eagerly during the warm-up (after a failed capture the
        trainer no longer calls it: ``failed``). ``owner``: the addresses the step reads and writes (a new one drops the graphs)."""
        if owner != self.owner:
            self.release()
            self.owner = owner
        self.steps += 1
        self.shapes.add(key)
        if self.device.type != "cuda":  # padded as for a graph, run eagerly (how the CPU tests see the padding)
            step(inputs)
            return
        captured = self.graphs.get(key)
        if captured is not None:
            graph, static = captured
            for into, value in zip(static, inputs, strict=True):
                into.copy_(value.pin_memory(), non_blocking=True)
            graph.replay()
            self.replays += 1
            return
        static = [to_device(value, self.device) for value in inputs]
        if self.steps <= WARMUP:
            step(static)
            return
        graph = torch.cuda.CUDAGraph()
        try:
            # thread_local: the checkpoint writer's thread may wait on its copies' event meanwhile (slot_copy), which
            # the default (global) mode forbids to every thread during a capture: it invalidated captures in a sweep
            with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
                step(static)
            failure = None
        except Exception as error:  # noqa: BLE001 - any failure to capture (out of memory too) leaves the steps eager
            failure = f"capture failed: {type(error).__name__}: {error}".splitlines()[0]
        if failure is None:
            self.pool = self.pool if self.pool is not None else graph.pool()
            self.graphs[key] = (graph, static)
            self.captures += 1
            self.reserved_mib = max(self.reserved_mib, torch.cuda.memory_reserved(self.device) >> 20)
            free, total = torch.cuda.mem_get_info(self.device)
            if free < FREE_AFTER_CAPTURE * total:  # the pool keeps what its steps need: evaluations, samples need room
                failure = f"{free / 2**30:.0f} GiB of {total / 2**30:.0f} free after {self.captures} shapes captured"
        if failure is not None:  # (outside the handler: the error's frames hold the capture's tensors)
            del graph  # it holds the shared pool: the eager step needs that memory back
            self._give_up(failure)
            step(static)
            return
        graph.replay()
        self.replays += 1

    def _give_up(self, reason: str) -> None:
        self.failed = reason
        log.warning("the group's steps run eagerly from now on, without CUDA graphs: %s", reason)
        self.release()
