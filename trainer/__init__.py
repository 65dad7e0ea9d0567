"""The trainer: runs one LoRA fine-tuning trial described by a :class:`trainer.spec.TrialSpec`.

Started by the orchestrator as ``python -m trainer SPEC.json``; it reports back through
``events.jsonl`` in the trial folder (see :mod:`trainer.events`). Importing this package stays
light (pydantic only) so that ``sweep`` can share the contract without importing torch.
"""
