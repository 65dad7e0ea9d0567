"""Time of a stacked group's work number by number a step: the compute copy, the gradient fold, clipping and AdamW.

    python3 bench/stack_step.py                                     # SmolLM2's shapes, 48 slots of the study's ranks
    python3 bench/stack_step.py --ranks 128                         # every slot at the largest rank
    python3 bench/stack_step.py --device cpu --layers 4 --slots 16  # a CPU check

A :class:`trainer.group.stacked_lora.SlotStack` with ``--layers`` decoder layers of all seven projections
(``--hidden``, ``--intermediate``, ``--kv``: SmolLM2-135M's by default), ``--slots`` members whose ranks take
``--ranks`` in turn (each with its LoRA scaling), every member due each step: the part of a group step
that runs over the stack's numbers rather than the rows (``fold_gradients``, ``step_slots``, ``refresh``;
the forward and backward are ``bench/fill_gpu.py``'s). Float32 weights and moments, the compute copy in
bf16 on a GPU (as a sweep's group) and float32 on the CPU. Times ``--steps`` steps after ``--warmup``
(``torch.cuda.synchronize`` around them on a GPU) and prints one JSON line: milliseconds a step, the
numbers the members own and the numbers of the stack's rows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda when there is one")
    parser.add_argument("--slots", type=int, default=48, help="members, all due every step")
    parser.add_argument("--ranks", default="8,16,32,64,128", help="the members' ranks in turn")
    parser.add_argument("--layers", type=int, default=30, help="decoder layers")
    parser.add_argument("--hidden", type=int, default=576)
    parser.add_argument("--intermediate", type=int, default=1536)
    parser.add_argument("--kv", type=int, default=192, help="width of the key and value projections")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)
    if args.steps <= args.warmup:
        parser.error(f"--steps {args.steps} must be more than --warmup {args.warmup}")
    return args


def projections(args) -> dict[str, SimpleNamespace]:
    """The adapted layers' shapes, as the stack reads them (``in_features``, ``out_features``)."""
    h, i, kv = args.hidden, args.intermediate, args.kv
    shapes = {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
              "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
    return {f"layers.{n}.{name}": SimpleNamespace(in_features=a, out_features=b)
            for n in range(args.layers) for name, (a, b) in shapes.items()}


def run(args) -> dict:
    import torch

    from trainer.group.stacked_adamw import step_slots
    from trainer.group.stacked_lora import SlotStack

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    layers = projections(args)
    unit = sum(layer.in_features + layer.out_features for layer in layers.values())  # numbers a rank, every layer
    stack = SlotStack(layers, device, torch.float32, torch.bfloat16 if cuda else None)
    ranks = [int(r) for r in args.ranks.split(",")]
    generator = torch.Generator().manual_seed(0)
    for slot in range(args.slots):
        r = ranks[slot % len(ranks)]
        weights = {name: (torch.randn(r, layer.in_features, generator=generator) * 0.01,
                          torch.randn(layer.out_features, r, generator=generator) * 0.01)
                   for name, layer in layers.items()}
        stack.add(slot, {name: (a.to(device), b.to(device)) for name, (a, b) in weights.items()}, 2.0)
    group = {"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0}
    due = [(slot, group, 1.0) for slot in range(args.slots)]
    seconds = []
    for step in range(args.steps):
        for slot in range(args.slots):  # a backward's gradients, at each slot's own rank
            r = stack.ranks[slot]
            stack.compute_grads[slot, :r * unit].fill_(1e-3)
        if cuda:
            torch.cuda.synchronize()
        began = time.perf_counter()
        stack.fold_gradients()
        step_slots(stack, due)
        stack.refresh()
        if cuda:
            torch.cuda.synchronize()
        if step >= args.warmup:
            seconds.append(time.perf_counter() - began)
    owned = sum(stack.ranks[slot] * unit for slot in range(args.slots))
    return {"device": str(device), "slots": args.slots, "ranks": args.ranks, "layers": args.layers,
            "ms_per_step": round(1000 * sum(seconds) / len(seconds), 2),
            "ms_best": round(1000 * min(seconds), 2), "owned_numbers": owned,
            "row_numbers": args.slots * stack.width(stack.rank)}


def main(argv: list[str] | None = None) -> None:
    print(json.dumps(run(parse(argv))))


if __name__ == "__main__":
    main()
