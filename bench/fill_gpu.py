"""Tokens per second of the shared-base group trainer at several K beside bare transformers + PEFT + TRL runs.

    python3 bench/fill_gpu.py --model /tmp/smol --ks 1,2,4,8,16 --bare-batches 16,128         # GPU
    python3 bench/fill_gpu.py --model /tmp/smol --ks 8,16,32,64 --matmul bmm,stacked --bare-batches ""
    python3 -m trainer.make_model 8b /tmp/llama8b                          # random-weight 8B folder, then:
    python3 bench/fill_gpu.py --model /tmp/llama8b --ks 1,2,4,8 --matmul stacked --rows-tokens 64 \\
        --bare-batches 16 --loss-chunk 4096                                                     # short rows
    python3 bench/fill_gpu.py --model /tmp/smol --data studies/data/sv-translate/train.jsonl --ks 32 \
        --matmul stacked --bare-batches "" --steps 10 --eval-rows 300 --profile 1             # evaluations
    python3 bench/fill_gpu.py --model /tmp/llama8b --ks 1,2,4 --matmul stacked --rows-tokens 530 \\
        --batch 8 --bare-batches 8 --loss-chunk 4096 --activation-checkpointing                  # ~530-token rows
    python3 bench/fill_gpu.py --model studies/models/tiny-llama --device cpu --ks 1,2 \\
        --bare-batches 4 --batch 4 --steps 5 --rows-tokens 32                                  # CPU check

Every run loads the base afresh from ``--model`` (bf16 and sdpa on a GPU, float32 and eager attention on
the CPU), trains ``--steps`` optimizer steps on the same short rows and times the steps after the first
``--warmup`` (torch.cuda.synchronize around the window, CUDA events inside it; the median step beside
the window's mean, as other work on a shared machine lands on a few steps). The rows are
``--data`` (chat JSONL, encoded with the model's chat template) or synthetic: random token ids of about
``--rows-tokens`` tokens (0.75x to 1.25x), the loss on the last two thirds of each.

- ``group K=k``: :class:`trainer.group.group_trainer.GroupTrainer`, k trials of batch ``--batch`` each
  (learning rates spread 1e-4..1e-3, seeds differ, rank ``--r`` or ``--ranks`` in turn), one stacked forward and backward a step,
  for every ``--matmul`` way of applying the adapters; tokens/s counts all k trials' real tokens.
  ``stacked`` (:class:`trainer.group.stacked_trainer.StackedGroupTrainer`: stacked adapters, one
  optimizer step for all trials; each trial's rows packed end to end unless ``--padded``) also takes
  ``--length-multiple``, ``--compile``, ``--loss-chunk`` and ``--activation-checkpointing`` (the group trainer keeps every activation otherwise: an 8B model on
  ~530-token rows needs it beyond a few trials), and ``--cuda-graphs`` (each step shape captured once and
  replayed: :mod:`trainer.group.step_graphs`; captures fall inside the timed steps, as in a sweep).
  On a GPU the base's RMSNorms run through ``F.rms_norm`` and a stacked group rotates queries and keys by
  halves, as a sweep's group does (:mod:`trainer.group.fused_norm`, :mod:`trainer.group.fused_rotary`;
  ``--transformers-norm``, ``--transformers-rotary``: transformers' own, the code before).
  With ``--eval-rows N``, after its steps every member evaluates the first N rows (batches of
  ``--eval-batch``) in one call, then one member alone: eval tokens/s of each beside the step's (a
  sweep's members evaluate 300 rows at 8 points each; on the H200 that took a fifth of a grouped sweep).
- ``bare batch b``: one PEFT model and TRL SFTTrainer at micro-batch b (adamw_torch, linear schedule,
  logging every step), the baseline a single trial gets.

Prints one JSON line per run, then a table. Settings beside every figure: model, device, dtype, r,
all seven projections, batch, rows, attention.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MATMULS = ("loop", "bmm", "stacked")  # trainer.group.multi_lora.MATMULS (not imported: --help stays instant)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="folder of the base model (and its tokenizer)")
    parser.add_argument("--data", type=Path, help="chat JSONL rows (default: synthetic rows)")
    parser.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda when there is one")
    parser.add_argument("--ks", default="1,2,4,8,16", help="group sizes to measure (empty: none)")
    parser.add_argument("--matmul", default="loop,bmm", help=f"ways to apply the adapters, among {','.join(MATMULS)}")
    parser.add_argument("--bare-batches", default="16,128", help="micro-batches of the bare TRL runs (empty: none)")
    parser.add_argument("--batch", type=int, default=16, help="micro-batch of each trial in a group")
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="first steps left out of the timing")
    parser.add_argument("--rows-tokens", type=int, default=64, help="synthetic rows: mean tokens a row")
    parser.add_argument("--r", type=int, default=16, help="LoRA rank")
    parser.add_argument("--ranks", default="",
                        help="group: the members' ranks in turn, e.g. 8,16,32,64,128 as a sweep mixes them (default: --r)")
    parser.add_argument("--load-in-4bit", action="store_true", help="QLoRA base (bitsandbytes, GPU only)")
    parser.add_argument("--length-multiple", type=int, default=1,
                        help="stacked: pad each step's length up to a multiple of this (fewer shapes to compile)")
    parser.add_argument("--compile", choices=["default", "reduce-overhead", "max-autotune-no-cudagraphs"],
                        help="stacked: torch.compile the decoder in this mode (reduce-overhead: CUDA graphs)")
    parser.add_argument("--loss-chunk", type=int,
                        help="stacked: tokens of the loss at a time, without keeping their logits (large vocabularies)")
    parser.add_argument("--activation-checkpointing", action="store_true",
                        help="stacked: recompute the decoder layers' activations in the backward (long rows, big K)")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="stacked: replay each step shape as a CUDA graph (trainer.group.step_graphs)")
    parser.add_argument("--transformers-norm", action="store_true",
                        help="group on a GPU: keep transformers' RMSNorm (default: F.rms_norm, as a sweep's group: "
                             "trainer.group.fused_norm)")
    parser.add_argument("--transformers-rotary", action="store_true",
                        help="stacked group on a GPU: transformers' rotary embedding (default: by halves, as a "
                             "sweep's group: trainer.group.fused_rotary)")
    parser.add_argument("--padded", action="store_true",
                        help="stacked: pad every row to the step's longest row instead of packing each trial's rows")
    parser.add_argument("--profile", type=int, default=0,
                        help="after each group run, that many more steps under torch.profiler: its top kernels")
    parser.add_argument("--eval-rows", type=int, default=0,
                        help="after a group's steps, time every member's evaluation on this many rows at once and "
                             "one member's alone (0: none)")
    parser.add_argument("--eval-batch", type=int, default=64, help="eval batch of --eval-rows (per_device_eval_batch_size)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.steps <= args.warmup:
        parser.error(f"--steps must exceed --warmup, but got steps={args.steps}, warmup={args.warmup}")
    unknown = [m for m in args.matmul.split(",") if m not in MATMULS]
    if unknown:
        parser.error(f"--matmul {args.matmul}: {unknown} not among {list(MATMULS)}")
    if args.length_multiple < 1:
        parser.error(f"--length-multiple must be at least 1, but got {args.length_multiple}")
    if args.loss_chunk is not None and args.loss_chunk < 1:
        parser.error(f"--loss-chunk must be at least 1, but got {args.loss_chunk}")

    # as a group worker runs (trainer.group.serve): every step has a shape of its own
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    rows = bench_rows(args)
    runs = [(group_run, k, matmul) for k in _ints(args.ks) for matmul in args.matmul.split(",")]
    runs += [(bare_run, batch) for batch in _ints(args.bare_batches)]
    results = []
    for run, *how in runs:
        results.append(report(run(args, rows, *how)))
        gc.collect()  # the run's model is gone: give its memory back before the next one loads
        if args.device == "cuda":
            torch.cuda.empty_cache()
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def load(args):
    """The base model and tokenizer as a trial loads them (trainer.backends), on ``args.device``."""
    from trainer.backends import load_model
    from trainer.spec import ModelSpec

    spec = ModelSpec(name_or_path=args.model, load_in_4bit=args.load_in_4bit, max_seq_length=4096)
    model, tokenizer = load_model("transformers", spec, args.device, seed=3407)
    model.set_attn_implementation("sdpa" if args.device == "cuda" else "eager")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def bench_rows(args) -> list[dict]:
    """``{input_ids, labels}`` rows: the chat file encoded, or synthetic short rows."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if args.data:
        from trainer.chat_data import encode_rows, set_chat_template
        from trainer.rows import read_jsonl

        set_chat_template(tokenizer, "model" if tokenizer.chat_template else "llama-3", needs_template=True)
        return encode_rows(tokenizer, read_jsonl(args.data), "chat", True, 4096)
    rng = random.Random(0)
    rows = []
    for _ in range(4096):
        n = rng.randint(args.rows_tokens * 3 // 4, args.rows_tokens * 5 // 4)
        ids = [rng.randrange(8, len(tokenizer) - 8) for _ in range(n)]
        rows.append({"input_ids": ids, "labels": [-100] * (n // 3) + ids[n // 3:]})
    return rows


class Window:
    """Wall time and CUDA-event time of the steady steps: synchronised at both ends, events recorded inside."""

    def __init__(self, device: str) -> None:
        import torch

        self.torch, self.cuda = torch, device == "cuda"
        self.wall = self.gpu_ms = None
        self.laps: list[float] = []  # wall seconds of each step in the window (after its losses were read)

    def start(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()
            self.begin = self.torch.cuda.Event(enable_timing=True)
            self.begin.record()
        self.t0 = self.last = time.perf_counter()

    def lap(self) -> None:
        now = time.perf_counter()
        self.laps.append(now - self.last)
        self.last = now

    def stop(self) -> None:
        if self.cuda:
            end = self.torch.cuda.Event(enable_timing=True)
            end.record()
            self.torch.cuda.synchronize()
            self.gpu_ms = self.begin.elapsed_time(end)
        self.wall = time.perf_counter() - self.t0


def group_trainer(args, rows: list[dict], k: int, matmul: str):
    """A group trainer on a fresh base with k trials of batch ``args.batch`` and :func:`member_rank` (learning rates
    spread 1e-4..1e-3, seeds differ), each with ``args.steps`` + 1 steps of ``rows`` ahead."""
    import torch

    from trainer.events import EventWriter
    from trainer.group.batches import TrainOrder
    from trainer.group.group_trainer import new_group_trainer
    from trainer.spec import TrialSpec

    model, tokenizer = load(args)
    cuda = args.device == "cuda"
    _reset(cuda)
    if cuda and not getattr(args, "transformers_norm", False):  # as trainer.group.run_group.open_group
        from trainer.group.fused_norm import fuse_norms

        fuse_norms(model)
    options = {}
    if matmul == "stacked":
        options = {"length_multiple": args.length_multiple, "compile_mode": args.compile,
                   "activation_checkpointing": args.activation_checkpointing, "loss_chunk": args.loss_chunk,
                   "packed": not args.padded, "cuda_graphs": args.cuda_graphs,
                   "rotary_by_halves": rotates_by_halves(args)}
    autocast = torch.bfloat16 if cuda else None
    if getattr(args, "autocast_bf16", False):  # bench/group_ops.py: a bf16 base under autocast, as on a GPU
        model, autocast = model.to(torch.bfloat16), torch.bfloat16
    trainer = new_group_trainer(model, tokenizer.pad_token_id, TARGETS, matmul, autocast, **options)
    folder = scratch("fill-gpu-")
    for i in range(k):
        spec = TrialSpec.model_validate({
            "study": "fill-gpu", "trial_number": i, "output_dir": str(folder / str(i)),
            "model": {"name_or_path": args.model}, "data": {"train": "-", "eval": "-"},
            "lora": {"r": member_rank(args, i), "lora_alpha": member_rank(args, i)},
            "training": {"learning_rate": 1e-4 * 10 ** (i / max(1, k - 1)), "num_train_epochs": 100,
                         "per_device_train_batch_size": args.batch, "optim": "adamw_torch", "seed": 3407 + i},
        })
        order = TrainOrder(rows, args.batch, 1, 100, args.steps + 1 + args.profile, spec.training.seed,
                           tokenizer.pad_token_id)
        trainer.add(spec, order, [], EventWriter(folder / f"events-{i}.jsonl"), time.time()).start_at(0)
    return trainer


def member_rank(args, i: int) -> int:
    """Member i's LoRA rank: ``--ranks`` in turn, else ``--r``."""
    ranks = [int(r) for r in getattr(args, "ranks", "").split(",") if r]
    return ranks[i % len(ranks)] if ranks else args.r


def rotates_by_halves(args) -> bool:
    """Whether a stacked group rotates by halves: on a GPU unless ``--transformers-rotary``, as
    :func:`trainer.group.run_group.open_group` does; on the CPU where bench/group_ops.py asks for it."""
    return getattr(args, "rotary_by_halves", False) or (
        args.device == "cuda" and not getattr(args, "transformers_rotary", False))


def group_step(trainer) -> int:
    """One step of every member, as a group run does it (the reports of the step before read once this one is
    queued, this step's staged behind it); the real tokens trained."""
    from trainer.group.member import log_progress, stage_logs

    tokens = 0
    stepped = trainer.train_step()
    log_progress(trainer.members)
    for member, batch, loss in stepped:
        member.after_backward(batch, loss)
        tokens += batch.tokens
    stage_logs(trainer.members)
    return tokens


def group_run(args, rows: list[dict], k: int, matmul: str) -> dict:
    """k trials in one group trainer for ``args.steps`` steps."""
    trainer = group_trainer(args, rows, k, matmul)
    window, tokens, first = Window(args.device), 0, time.perf_counter()
    for step in range(1, args.steps + 1):
        if step == args.warmup + 1:
            window.start()
        trained = group_step(trainer)
        if step > args.warmup:
            tokens += trained
            window.lap()
        if step == 1:
            first = time.perf_counter() - first
    window.stop()
    how = matmul if matmul != "stacked" else f"stacked {'padded' if args.padded else 'packed'}"
    graphs = getattr(trainer, "graphs", None)
    how += " graphs" if graphs is not None else ""
    how += " transformers-norm" if getattr(args, "transformers_norm", False) else ""
    how += " transformers-rotary" if getattr(args, "transformers_rotary", False) else ""
    how += " rotary-by-halves" if getattr(args, "rotary_by_halves", False) else ""
    figures = _figures(args, f"group K={k} {how}", k * args.batch, tokens, window, first)
    if graphs is not None:  # captures happen in the timed window too, as in a sweep (one per new shape)
        figures["graphs"] = {"captures": graphs.captures, "replays": graphs.replays, "failed": graphs.failed,
                             "reserved_mib": graphs.reserved_mib}
    if args.profile:
        figures["profile"] = profile_steps(trainer, args.profile)
    if args.eval_rows:
        figures["evaluation"] = evaluation_figures(trainer, rows[:args.eval_rows], args)
    return figures


def evaluation_figures(trainer, rows: list[dict], args) -> dict:
    """Every member's evaluation on ``rows`` (batches of ``--eval-batch``) as one call, then one member's alone:
    eval tokens per second of each (the evaluation forward against a training step's tokens per second), and with
    ``--profile`` the kernels of the all-members evaluation."""
    import torch

    from trainer.group.batches import eval_batches

    batches = eval_batches(rows, args.eval_batch, trainer.pad_id)
    for member in trainer.members:
        member.eval_data = batches
    tokens = sum(int(mask.sum()) for _, mask, _ in batches)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    figures = {"eval_rows": len(rows), "eval_tokens_a_member": tokens}
    trainer.evaluate(trainer.members[:1])  # the first evaluation's shapes and kernels
    for name, members in (("all", trainer.members), ("one", trainer.members[:1])):
        sync()
        began = time.perf_counter()
        trainer.evaluate(members)
        sync()
        seconds = time.perf_counter() - began
        figures[f"{name}_members_s"] = round(seconds, 3)
        figures[f"{name}_members_tokens_per_s"] = round(len(members) * tokens / seconds, 1)
    if args.profile:
        figures["profile"] = profile_steps(trainer, 1, work=lambda: (trainer.evaluate(trainer.members),
                                                                     len(trainer.members) * tokens)[1])
    return figures


def profile_steps(trainer, steps: int, top: int = 15, work=None) -> dict:
    """``steps`` group steps (or calls of ``work``, which returns the real tokens it ran) under torch.profiler:
    GPU busy and wall time a step, padded tokens against real ones, and the kernels taking most GPU time (name,
    share, calls a step)."""
    work = work or (lambda: group_step(trainer))
    import torch
    from torch.profiler import ProfilerActivity, profile

    shapes = []
    original = trainer._hidden

    def hidden(ids, second):  # count the tokens the decoder sees, padding included
        shapes.append(ids.numel())
        return original(ids, second)

    trainer._hidden = hidden
    cuda = torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    sync()
    t0 = time.perf_counter()
    real = 0
    with profile(activities=activities) as prof:
        for _ in range(steps):
            real += work()
        sync()
    wall = (time.perf_counter() - t0) / steps
    trainer._hidden = original
    kernels = [e for e in prof.events() if e.device_type.name == "CUDA"]
    busy = sum(e.device_time for e in kernels)
    by_name: dict[str, list[float]] = {}
    for e in kernels:
        entry = by_name.setdefault(e.name[:140], [0.0, 0])
        entry[0] += e.device_time
        entry[1] += 1
    ranked = sorted(by_name.items(), key=lambda item: -item[1][0])[:top]
    ops = sorted((e for e in prof.key_averages() if e.self_device_time_total > 0),
                 key=lambda e: -e.self_device_time_total)[:top]
    return {"wall_ms": round(wall * 1e3, 1), "gpu_busy_ms": round(busy / 1e3 / steps, 1),
            "kernels_per_step": round(len(kernels) / steps),
            "real_token_share": round(real / max(1, sum(shapes)), 3),
            "top": [[name, round(t / busy, 3), round(n / steps, 1)] for name, (t, n) in ranked],
            "top_ops": [[e.key, round(e.self_device_time_total / busy, 3), round(e.count / steps, 1)] for e in ops]}


def bare_run(args, rows: list[dict], batch: int) -> dict:
    """One PEFT + TRL SFTTrainer trial at micro-batch ``batch``."""
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model, tokenizer = load(args)
    cuda = args.device == "cuda"
    _reset(cuda)
    model = get_peft_model(model, LoraConfig(r=args.r, lora_alpha=args.r, target_modules=TARGETS,
                                             task_type="CAUSAL_LM"))
    collate, tokens = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id), []
    window, started = Window(args.device), time.perf_counter()

    def counting(examples):  # batch i is collated just before step i (no dataloader workers)
        tokens.append(sum(len(e["input_ids"]) for e in examples))
        return collate(examples)

    class Clock(TrainerCallback):
        first = None

        def on_step_end(self, a, state, control, **kw):
            if state.global_step == 1:
                Clock.first = time.perf_counter() - started
            if state.global_step == args.warmup:
                window.start()
            elif state.global_step > args.warmup:
                window.lap()
            if state.global_step == args.steps:
                window.stop()

    config = SFTConfig(output_dir=str(scratch("fill-gpu-bare-")), per_device_train_batch_size=batch,
                       max_steps=args.steps, learning_rate=2e-4, lr_scheduler_type="linear", warmup_steps=2,
                       optim="adamw_torch", weight_decay=0.01, bf16=cuda, logging_steps=1, save_strategy="no",
                       eval_strategy="no", report_to="none", disable_tqdm=True, gradient_checkpointing=False,
                       max_length=4096, dataloader_num_workers=0, use_cpu=not cuda, seed=3407)
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         data_collator=counting, callbacks=[Clock()])
    trainer.train()
    return _figures(args, f"bare batch {batch}", batch, sum(tokens[args.warmup:args.steps]), window, Clock.first)


def scratch(prefix: str) -> Path:
    """A temporary folder removed when the bench exits."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, True)
    return folder


def _figures(args, name: str, rows_per_step: int, tokens: int, window: Window, first: float) -> dict:
    import torch

    cuda = args.device == "cuda"
    steps = args.steps - args.warmup
    median = statistics.median(window.laps)
    figures = {
        "run": name, "tokens_per_s": round(tokens / window.wall, 1), "step_s": round(window.wall / steps, 4),
        # on a shared machine other work lands on some steps: the median step is the steadier figure
        "tokens_per_s_median_step": round(tokens / steps / median, 1), "median_step_s": round(median, 4),
        "gpu_ms_per_step": round(window.gpu_ms / steps, 2) if window.gpu_ms is not None else None,
        "rows_per_step": rows_per_step, "first_step_s": round(first, 2),
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "settings": {"model": args.model, "device": args.device, "dtype": "bf16" if cuda else "float32",
                     "r": getattr(args, "ranks", "") or args.r, "targets": "all 7", "4bit": args.load_in_4bit, "data": str(args.data or
                     f"synthetic ~{args.rows_tokens} tokens"), "steps": args.steps, "warmup": args.warmup},
    }
    return figures


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def _reset(cuda: bool) -> None:
    if cuda:
        import torch

        torch.cuda.reset_peak_memory_stats()


def report(figures: dict) -> dict:
    print(json.dumps(figures), flush=True)
    return figures


def table(results: list[dict]) -> str:
    lines = ["| run | tokens/s | tokens/s (median step) | s/step | GPU ms/step | rows/step | first step s | peak GiB |",
             "|---" * 8 + "|"]
    for r in results:
        lines.append(f"| {r['run']} | {r['tokens_per_s']:,.0f} | {r['tokens_per_s_median_step']:,.0f} | "
                     f"{r['step_s']} | {r['gpu_ms_per_step']} | "
                     f"{r['rows_per_step']} | {r['first_step_s']} | {r['peak_gib']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
