"""A warm trainer: imports the training stack once, then runs trials one after another.

    python -m trainer.worker [--backend auto] [--max-trials 8] [--max-leak-mb 4096] [--folder DIR]

The orchestrator starts one per slot (GPU, or CPU) and writes one request per line to its
stdin (``{"spec": PATH, "env": {...}}``). Each trial runs exactly as ``python -m trainer SPEC`` would run it (same events, same result),
with its output sent to the trial's ``trainer.log``. ``import unsloth`` (30 to 40 s on a GPU, and it
initialises CUDA, so nothing can be forked after it) is so paid once per worker instead of per trial,
and the base model is kept loaded from one trial to the next (:mod:`trainer.resident_base`).

A trial's failure must not leak into the next one: after each trial the worker frees it and compares
the GPU memory still allocated with its baseline from before the first trial plus the kept base. It exits, and says so in
the trial's result (``worker_exits``), when the trial did not end cleanly, when more than
``--max-leak-mb`` stayed allocated, or after ``--max-trials`` trials; the orchestrator then starts a
fresh worker. A crash, hang or kill ends only the worker's current trial: the orchestrator kills the
worker's process group and the next trial gets a new worker.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

# the defaults of a study's execution.worker_max_trials and execution.worker_max_leak_mb too (sweep.schema.study_file)
MAX_TRIALS = 8
MAX_LEAK_MB = 4096.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="auto", choices=["auto", "unsloth", "transformers"])
    parser.add_argument("--max-trials", type=int, default=MAX_TRIALS, help="exit after this many trials")
    parser.add_argument("--max-leak-mb", type=float, default=MAX_LEAK_MB,
                        help="exit when more GPU memory (MiB) stayed allocated after a trial")
    parser.add_argument("--folder", help="the worker's folder under the study (its log and caches; shown in ps)")
    args = parser.parse_args(argv)

    from trainer.backends import choose_backend
    from trainer.process_guard import exit_with_parent
    from trainer.resident_base import ResidentBase, allocated_mb
    from trainer.run_trial import main as run_trial
    from trainer.trial_folder import LOG_FILE

    exit_with_parent()
    backend, device = choose_backend(args.backend)
    warm_imports()
    baseline = allocated_mb(device)
    resident = ResidentBase()
    print(f"worker {os.getpid()}: {backend} on {device}, ready (baseline {baseline:.0f} MiB)", flush=True)
    for count, line in enumerate(sys.stdin, 1):
        request = json.loads(line)
        spec_path = Path(request["spec"])
        os.environ.update(request.get("env", {}))  # the trial's own variables (not CUDA_VISIBLE_DEVICES)
        exits = False

        def settle(result, count=count):
            nonlocal exits
            leaked = settle_memory(device) - baseline - resident.resident_mb
            exits = result.status not in ("ok", "stopped") or leaked > args.max_leak_mb or count >= args.max_trials
            return result.model_copy(update={"worker_exits": exits, "gpu_leak_mb": round(leaked, 1)})

        with output_to(spec_path.parent / LOG_FILE):
            print(f"worker {os.getpid()}: trial {count} of this worker", flush=True)
            code = run_trial(spec_path, started=time.time(), before_result=settle, resident=resident)
        if exits:
            return code
    return 0


def warm_imports() -> None:
    """Import what a trial imports, so the first trial does not pay for it."""
    import datasets  # noqa: F401
    import peft  # noqa: F401
    from trl import SFTTrainer  # noqa: F401

    import trainer.callbacks  # noqa: F401
    import trainer.chat_data  # noqa: F401


def settle_memory(device: str) -> float:
    """Free what the finished trial left behind; the GPU memory still allocated afterwards (MiB)."""
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    from trainer.resident_base import allocated_mb

    return allocated_mb(device)


@contextmanager
def output_to(log_path: Path):
    """Send this process's stdout and stderr (file descriptors 1 and 2) to ``log_path`` for a while."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (fd, *saved):
            os.close(f)


if __name__ == "__main__":
    sys.exit(main())
