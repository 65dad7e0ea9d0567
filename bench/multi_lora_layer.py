"""Forward + backward time of one multi-adapter LoRA layer: a loop over segments against batched matmuls.

    python3 bench/multi_lora_layer.py --device cpu --ks 1,2,4,8 --rows 4 --tokens 64 --hidden 576 --out 1536
    python3 bench/multi_lora_layer.py --device cuda --ks 1,4,16,32 --rows 16 --tokens 64 --dtype bfloat16

K segments of ``--rows`` rows x ``--tokens`` tokens go through a frozen ``nn.Linear(hidden, out)`` with K
adapters whose ranks cycle through ``--ranks``; each mode runs ``--repeats`` forward+backward passes
after ``--warmup``, the modes' passes interleaved and each timed alone (CUDA synchronised around it). Prints
the median milliseconds per pass per mode and K (the median, as a shared machine's other work lands on a few).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", help="dtype of the base layer and the input")
    parser.add_argument("--ks", default="1,2,4,8")
    parser.add_argument("--ranks", default="8,16,32", help="adapter ranks, cycled over the segments")
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=576)
    parser.add_argument("--out", type=int, default=1536)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()

    import statistics

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from trainer.group.multi_lora import MATMULS

    dtype = getattr(torch, args.dtype)
    ranks = [int(r) for r in args.ranks.split(",")]
    print(f"| K | {' | '.join(f'{m} ms' for m in MATMULS)} |\n|---|" + "---|" * len(MATMULS))
    for k in [int(k) for k in args.ks.split(",")]:
        runs = [_layer_pass(args, dtype, ranks, k, matmul) for matmul in MATMULS]
        passes = [[] for _ in MATMULS]
        for i in range(args.warmup + args.repeats):
            for run, times in zip(runs, passes, strict=True):  # interleaved: both see the same machine load
                _sync(args.device)
                began = time.perf_counter()
                run()
                _sync(args.device)
                if i >= args.warmup:
                    times.append(time.perf_counter() - began)
        print(f"| {k} | " + " | ".join(f"{statistics.median(t) * 1000:.2f}" for t in passes) + " |", flush=True)
    return 0


def _layer_pass(args, dtype, ranks: list[int], k: int, matmul: str):
    """A function running one forward and backward of a layer with k adapters, in ``matmul`` mode."""
    import torch

    from trainer.group.multi_lora import MultiLoraLinear, Routing, Segment

    torch.manual_seed(0)
    routing = Routing(matmul)
    base = torch.nn.Linear(args.hidden, args.out, bias=False, dtype=dtype, device=args.device).requires_grad_(False)
    layer = MultiLoraLinear(base, routing)
    for slot in range(k):
        r = ranks[slot % len(ranks)]
        layer.add_adapter(slot, torch.randn(r, args.hidden) * 0.01, torch.randn(args.out, r) * 0.01, 2.0)
    x = torch.randn(k * args.rows, args.tokens, args.hidden, dtype=dtype, device=args.device, requires_grad=True)
    segments = [Segment(s, s * args.rows, (s + 1) * args.rows, args.tokens) for s in range(k)]

    def run() -> None:
        with routing.route(segments):
            layer(x).float().square().mean().backward()

    return run


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


if __name__ == "__main__":
    sys.exit(main())
