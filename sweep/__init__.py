"""The orchestrator: Optuna studies of LoRA fine-tuning trials, each run by ``python -m trainer`` in a subprocess.

Never imports torch, transformers, peft, trl or unsloth: those live in the trainer's process.
"""

__version__ = "0.1.0"
