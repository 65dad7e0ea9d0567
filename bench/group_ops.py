"""Operators a group step runs, per way of applying the adapters and group size K: a CPU proxy for GPU launches.

    python3 bench/group_ops.py --model studies/models/tiny-llama --ks 1,2,4,8 --matmul loop,bmm,stacked

On a GPU a small model's step waits on kernel launches, so what a step costs there grows with the
operators it dispatches. This counts them on the CPU with ``torch.profiler``: every ``aten::``
operator of ``--steps`` group steps (forward, backward, optimizer steps, loss logging) after
``--warmup`` steps, leaving out the batch building on the CPU (the ``group::host_inputs`` range:
collating rows, no device work but one copy, which is counted). ``kernels`` counts the operators
that would launch one: leaves of the operator tree that are not views or metadata. Same trials as
``bench/fill_gpu.py`` (synthetic rows, all seven projections).

Prints one JSON line per run, then a table of kernels a step by K.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fill_gpu import MATMULS, bench_rows, group_step, group_trainer  # noqa: E402

HOST_INPUTS = "group::host_inputs"  # trainer.group.group_trainer.HOST_INPUTS (not imported: --help stays instant)
# operators that only make views or read metadata: no kernel on a GPU
NO_KERNEL = {"aten::" + name for name in (
    "view", "_unsafe_view", "reshape", "_reshape_alias", "as_strided", "t", "transpose", "permute", "expand",
    "select", "slice", "narrow", "unsqueeze", "squeeze", "unbind", "split", "split_with_sizes", "chunk", "detach",
    "alias", "lift_fresh", "resolve_conj", "resolve_neg", "empty", "empty_strided", "empty_like", "result_type", "to",
    "is_nonzero", "numpy_T", "expand_as", "view_as", "unflatten", "flatten", "contiguous", "_has_compatible_shallow_copy_type",
)}


def count_ops(args, k: int, matmul: str) -> dict:
    """Operators of ``args.steps`` steps of k trials (after ``args.warmup``): totals and per step."""
    from torch.profiler import ProfilerActivity, profile

    whole = argparse.Namespace(**{**vars(args), "steps": args.warmup + args.steps})  # steps of data the trials get
    trainer = group_trainer(whole, bench_rows(args), k, matmul)
    for _ in range(args.warmup):
        group_step(trainer)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            group_step(trainer)
    events = [e for e in prof.events() if e.name.startswith("aten::") and not _inside(e, HOST_INPUTS)]
    kernels = [e for e in events if e.name not in NO_KERNEL and not any(c.name.startswith("aten::") for c in e.cpu_children)]
    names: dict[str, int] = {}
    for e in kernels:
        names[e.name] = names.get(e.name, 0) + 1
    top = sorted(names.items(), key=lambda item: -item[1])[:args.top]
    return {"run": f"K={k} {matmul}" + (" autocast bf16" if args.autocast_bf16 else ""), "k": k, "matmul": matmul, "ops_per_step": len(events) / args.steps,
            "kernels_per_step": len(kernels) / args.steps, "top_kernels": {n: c / args.steps for n, c in top}}


def _inside(event, name: str) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name == name:
            return True
        parent = parent.cpu_parent
    return False


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(ROOT / "studies" / "models" / "tiny-llama"), help="base model folder")
    p.add_argument("--ks", default="1,2,4,8", help="group sizes")
    p.add_argument("--matmul", default=",".join(MATMULS), help=f"ways to apply the adapters, among {','.join(MATMULS)}")
    p.add_argument("--batch", type=int, default=4, help="micro-batch of each trial")
    p.add_argument("--steps", type=int, default=2, help="steps counted")
    p.add_argument("--warmup", type=int, default=2, help="steps before counting")
    p.add_argument("--rows-tokens", type=int, default=24, help="synthetic rows: mean tokens a row")
    p.add_argument("--r", type=int, default=8, help="LoRA rank")
    p.add_argument("--top", type=int, default=8, help="most frequent kernels to list")
    p.add_argument("--autocast-bf16", action="store_true",
                   help="a bfloat16 base, steps under torch.autocast to bfloat16, as a group trains on a GPU")
    p.add_argument("--rotary-by-halves", action="store_true",
                   help="stacked: queries and keys rotated by halves (trainer.group.fused_rotary)")
    p.add_argument("--json", type=Path, help="also write the results here")
    return p


def options(argv: list[str] | None = None) -> argparse.Namespace:
    """Parsed options, with the settings bench/fill_gpu.py's helpers read (CPU, float32, synthetic rows)."""
    args = parser().parse_args(argv)
    args.device, args.data, args.load_in_4bit = "cpu", None, False
    args.length_multiple, args.compile, args.activation_checkpointing, args.loss_chunk = 1, None, False, None
    args.padded, args.profile, args.cuda_graphs = False, 0, False  # stacked steps packed, as a group worker trains them
    return args


def main(argv: list[str] | None = None) -> int:
    args = options(argv)
    results = []
    for matmul in args.matmul.split(","):
        for k in [int(k) for k in args.ks.split(",") if k]:
            results.append(count_ops(args, k, matmul))
            print(json.dumps(results[-1]), flush=True)
    ks = sorted({r["k"] for r in results})
    lines = ["| matmul | " + " | ".join(f"K={k}" for k in ks) + " |", "|---" * (len(ks) + 1) + "|"]
    for matmul in dict.fromkeys(r["matmul"] for r in results):
        by_k = {r["k"]: r for r in results if r["matmul"] == matmul}
        lines.append(f"| {matmul} | " + " | ".join(f"{by_k[k]['kernels_per_step']:,.0f} ({by_k[k]['ops_per_step']:,.0f})"
                                                    if k in by_k else "" for k in ks) + " |")
    print("kernels a step (all aten operators)\n" + "\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
