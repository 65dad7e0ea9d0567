"""The names of a trial folder's files, one home for the trainer and the orchestrator alike.

A trial folder (``runs/NAME/trials/NNNNN/``) holds::

    spec.json            the TrialSpec the orchestrator wrote (the trainer's input)
    events.jsonl         the trainer's events (trainer.events)
    trainer.log          the trainer's stdout and stderr
    STOP                 created by the orchestrator: stop at the next step (pruned)
    .trainer.lock        held by the trainer writing the folder, so a retry never writes beside it
    checkpoints/         the Trainer's checkpoints and owner.json (trainer.checkpoints)
    adapter/             the finished PEFT adapter, with tokenizer and trial_spec.json

This module imports nothing, so ``sweep`` may import it.
"""

SPEC_FILE = "spec.json"
EVENTS_FILE = "events.jsonl"
LOG_FILE = "trainer.log"
STOP_FILE = "STOP"
LOCK_FILE = ".trainer.lock"
CHECKPOINT_DIR = "checkpoints"
OWNER_FILE = "owner.json"  # in CHECKPOINT_DIR: which trial may resume them
ADAPTER_DIR = "adapter"
ADAPTER_SPEC_FILE = "trial_spec.json"  # in ADAPTER_DIR: how the adapter was made
