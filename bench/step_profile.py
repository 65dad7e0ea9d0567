"""Where a small model's LoRA step goes on a GPU: kernel launches, GPU busy time and wall time.

    python3 bench/step_profile.py --model /tmp/smol --batches 16,128

For each micro-batch: a PEFT LoRA model (r 16, all seven projections, bf16 autocast, fused AdamW) trained
by a plain PyTorch loop (no Trainer) on synthetic rows of ``--rows-tokens`` tokens; torch.profiler over
``--steps`` steps counts the CUDA kernels a step launches and sums their GPU time. Beside it: the cost of
one launch on this machine (``--launches`` tiny kernels back to back, synchronised at the end) and the
same step replayed as one CUDA graph (static shapes), the bound a launch-free step can reach.
Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def launch_cost(n: int) -> dict:
    import torch

    x = torch.zeros(16, device="cuda")
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        x.add_(1.0)
    torch.cuda.synchronize()
    return {"measure": "launch", "kernels": n, "us_per_launch": round((time.perf_counter() - t0) / n * 1e6, 2)}


def step_figures(model_dir: str, batch: int, tokens: int, steps: int, graph: bool) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from torch.profiler import ProfilerActivity, profile
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, attn_implementation="sdpa").cuda()
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=16, target_modules=TARGETS, task_type="CAUSAL_LM"))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=True, capturable=graph)
    ids = torch.randint(8, model.config.vocab_size - 8, (batch, tokens), device="cuda")
    labels = ids.clone()
    labels[:, : tokens // 3] = -100

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=not graph)
        return loss

    run = step
    if graph:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(stream)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            static_loss = step()

        def run():
            g.replay()
            return static_loss
    for _ in range(3):
        run()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = run()
    loss.item()
    wall = (time.perf_counter() - t0) / steps
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            run()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type.name == "CUDA"]
    busy = sum(e.device_time for e in kernels) / 1e3 / steps
    return {"measure": "step", "batch": batch, "rows_tokens": tokens, "cuda_graph": graph,
            "kernels_per_step": round(len(kernels) / steps), "gpu_busy_ms": round(busy, 2),
            "wall_ms": round(wall * 1e3, 2), "tokens_per_s": round(batch * tokens / wall),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--batches", default="16,128")
    parser.add_argument("--rows-tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--launches", type=int, default=20000)
    parser.add_argument("--no-graph", action="store_true", help="skip the CUDA-graph replays")
    args = parser.parse_args()
    print(json.dumps(launch_cost(args.launches)), flush=True)
    for batch in (int(b) for b in args.batches.split(",")):
        for graph in (False,) if args.no_graph else (False, True):
            try:
                print(json.dumps(step_figures(args.model, batch, args.rows_tokens, args.steps, graph)), flush=True)
            except Exception as error:  # a graph capture can fail on some ops: say so and go on
                print(json.dumps({"measure": "step", "batch": batch, "cuda_graph": graph,
                                  "error": f"{type(error).__name__}: {error}"[:300]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
