"""Time a stacked member's checkpoint write on the writer's thread, alone and beside a busy training thread.

    python3 bench/checkpoint_write.py                    # SmolLM2's shapes, one member at rank 128 (470 MB)
    python3 bench/checkpoint_write.py --rank 16 --repeats 5

A :class:`trainer.group.stacked_lora.SlotStack` of ``--layers`` decoder layers of all seven projections
(SmolLM2-135M's sizes) with one member at ``--rank``, its weights and AdamW moments filled; a
:class:`trainer.group.slot_copy.SlotCopy` of it written by :func:`trainer.group.checkpoint.write_snapshot`
(the adapter's safetensors, ``optimizer.pt``, ``trainer_state.json``) into a temporary folder, ``--repeats``
times: alone, then on a thread of its own while the calling thread runs Python without pause (the worst
case of a group's training thread, which on a GPU mostly waits with the interpreter released). Each torch
call of the writer gives the interpreter up and waits for it again, up to Python's switch interval (5 ms)
while the other thread runs. Prints one JSON line: the median milliseconds of a write in each case.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rank", type=int, default=128)
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    return parser.parse_args(argv)


def snapshot_of(args, folder: Path) -> dict:
    import torch

    from trainer.group.slot_copy import SlotCopy
    from trainer.group.stacked_lora import SlotStack
    from trainer.spec import TrialSpec

    h, i, kv = 576, 1536, 192
    shapes = {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
              "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
    layers = {f"model.layers.{n}.{name}": SimpleNamespace(in_features=a, out_features=b)
              for n in range(args.layers) for name, (a, b) in shapes.items()}
    stack = SlotStack(layers, torch.device("cpu"), torch.float32, None)
    stack.grow(1, args.rank)
    generator = torch.Generator().manual_seed(0)
    weights = {name: (torch.randn(args.rank, s.in_features, generator=generator),
                      torch.randn(s.out_features, args.rank, generator=generator)) for name, s in layers.items()}
    stack.add(0, weights, 2.0)
    for flat in (stack.exp_avg, stack.exp_avg_sq):
        flat.normal_(generator=generator)
    stack.steps[0] = 3
    spec = TrialSpec.model_validate({
        "study": "bench", "trial_number": 0, "output_dir": str(folder),
        "model": {"name_or_path": "base"}, "data": {"train": "-", "eval": "-"},
        "lora": {"r": args.rank, "lora_alpha": args.rank, "target_modules": list(shapes)},
        "training": {"learning_rate": 1e-4, "optim": "adamw_torch", "num_train_epochs": 1}})
    group = {"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "params": []}
    state = {"global_step": 3, "train_batch_size": 16, "epoch": 0.1, "evals": [], "losses": [], "train_tokens": 0}
    return {"spec": spec, "step": 3, "state": state, "copied": SlotCopy(stack, 0, group),
            "states": {"scheduler": {}, "generator": None}}


def beside_busy_thread(saved: dict) -> float:
    """Seconds of one write on a thread of its own while this thread runs Python without pause."""
    from trainer.group.checkpoint import write_snapshot

    took, done = [], threading.Event()

    def write():
        began = time.perf_counter()
        write_snapshot(saved, "base")
        took.append(time.perf_counter() - began)
        done.set()

    thread = threading.Thread(target=write)
    thread.start()
    while not done.is_set():  # the training thread's Python, never waiting
        pass
    thread.join()
    return took[0]


def main(argv=None) -> None:
    from trainer.group.checkpoint import write_snapshot

    args = parse(argv)
    with tempfile.TemporaryDirectory() as folder:
        saved = snapshot_of(args, Path(folder) / "trial")
        saved["spec"].out.mkdir(parents=True)
        alone = []
        for _ in range(args.repeats):
            began = time.perf_counter()
            write_snapshot(saved, "base")
            alone.append(time.perf_counter() - began)
        beside = [beside_busy_thread(saved) for _ in range(args.repeats)]
        size = sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())
    print(json.dumps({"rank": args.rank, "layers": args.layers, "bytes": size,
                      "ms_alone": round(statistics.median(alone) * 1000, 1),
                      "ms_beside_busy_thread": round(statistics.median(beside) * 1000, 1)}))


if __name__ == "__main__":
    main()
