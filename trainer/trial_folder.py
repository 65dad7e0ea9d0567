"""The names of a trial folder's files, one home for the trainer and the orchestrator alike.

A trial folder (``runs/NAME/trials/NNNNN/``) holds::

    spec.json            the TrialSpec the orchestrator wrote (the trainer's input)
    events.jsonl         the trainer's events (trainer.events)
    trainer.log          the trainer's stdout and stderr
    STOP                 created by the orchestrator: stop at the next step (pruned)
    .trainer.lock        held by the trainer writing the folder, so a retry never writes beside it
    checkpoints/         the Trainer's checkpoints and owner.json (trainer.checkpoints)
    adapter/             the finished PEFT adapter, with tokenizer, trial_spec.json and adapter_eval.json
    samples.jsonl        the trial's sample generations, written by the orchestrator for the dashboard
    cache/               the trainer's compile caches (Unsloth, Triton, TorchInductor)

    >>> adapter_complete(Path("runs/demo/trials/00003") / ADAPTER_DIR)  # doctest: +SKIP
    True

This module imports nothing but pathlib, so ``sweep`` may import it.
"""

from __future__ import annotations

from pathlib import Path

SPEC_FILE = "spec.json"
EVENTS_FILE = "events.jsonl"
LOG_FILE = "trainer.log"
STOP_FILE = "STOP"
LOCK_FILE = ".trainer.lock"
CHECKPOINT_DIR = "checkpoints"
OWNER_FILE = "owner.json"  # in CHECKPOINT_DIR: which trial may resume them
ADAPTER_DIR = "adapter"
ADAPTER_SPEC_FILE = "trial_spec.json"  # in ADAPTER_DIR: how the adapter was made
ADAPTER_EVAL_FILE = "adapter_eval.json"  # in ADAPTER_DIR: the step and eval loss of its weights, and their owner
ADAPTER_CONFIG_FILE = "adapter_config.json"  # in ADAPTER_DIR: PEFT's
ADAPTER_WEIGHTS_FILES = ("adapter_model.safetensors", "adapter_model.bin")  # in ADAPTER_DIR: PEFT's, one of them
SAMPLES_FILE = "samples.jsonl"
COMPILE_CACHE_DIR = "cache"


def adapter_complete(folder: Path | str) -> bool:
    """Whether ``folder`` holds a finished trial's adapter: PEFT's config and weights, and the trial's spec.

    The trainer writes all three under a temporary name and renames the folder into place, so a folder
    that lacks one was moved, cleaned or written by something else.
    """
    folder = Path(folder)
    return ((folder / ADAPTER_CONFIG_FILE).is_file() and (folder / ADAPTER_SPEC_FILE).is_file()
            and any((folder / name).is_file() for name in ADAPTER_WEIGHTS_FILES))


def adapter_contents() -> str:
    """What :func:`adapter_complete` asks of a folder, for messages."""
    return f"{ADAPTER_CONFIG_FILE}, {ADAPTER_WEIGHTS_FILES[0]} and {ADAPTER_SPEC_FILE}"
