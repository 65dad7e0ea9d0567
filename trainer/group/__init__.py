"""Several trials in one trainer on one shared frozen base (the ``grouped`` backend).

- :mod:`trainer.group.multi_lora`: a frozen linear layer with one LoRA adapter per trial, each
  applied to its own rows of a stacked batch;
- :mod:`trainer.group.batches`: each trial's micro-batches in the Trainer's order;
- :mod:`trainer.group.member`: one trial's optimizer, schedule, eval points, stop file and events;
- :mod:`trainer.group.group_trainer`: the shared stacked forward and backward, and evaluation;
- :mod:`trainer.group.peft_format`: a member's adapter saved as an ordinary PEFT adapter;
- :mod:`trainer.group.run_group`: a queue of trial specs through a group, folders and results;
- :mod:`trainer.group.fused_norm`: on a GPU, the base's RMSNorms as one kernel each way.

The ``stacked`` matmul trades bit-exactness for a step whose kernels do not grow with the trials:
- :mod:`trainer.group.stacked_lora`: every slot's adapter of every layer in stacked tensors;
- :mod:`trainer.group.stacked_adamw`: one AdamW step and per-slot clipping for all slots;
- :mod:`trainer.group.stacked_trainer`: the stacked forward, loss, backward and evaluation;
- :mod:`trainer.group.chunked_loss`: the loss through the output layer without keeping all logits;
- :mod:`trainer.group.step_graphs`: the stacked step captured once per shape and replayed as a CUDA graph;
- :mod:`trainer.group.fused_rotary`: queries and keys rotated by halves (on a GPU, as the norms are).

A trial trained in a group ends with the same adapter and eval curve as the same trial trained
alone (a group of one), bit for bit on the CPU with the ``loop`` matmul, to rounding with ``bmm``
and ``stacked``.
"""
