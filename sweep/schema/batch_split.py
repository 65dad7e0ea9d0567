"""The effective batch (examples per optimizer step) as micro-batch x gradient accumulation.

What changes training is the effective batch; the micro-batch only has to fit in memory. So a study
searches ``effective_batch_size`` and ``training.per_device_train_batch_size`` is the largest
micro-batch: a trial of effective batch ``E`` runs micro-batches of ``min(E, max_micro)`` and
accumulates ``E / micro`` of them. An ``E`` above the largest micro-batch must be a multiple of it.

    >>> split_batch(32, 8)
    (8, 4)
    >>> split_batch(4, 8)
    (4, 1)
"""

from __future__ import annotations


def split_batch(effective: int, max_micro: int) -> tuple[int, int]:
    """``(per_device_train_batch_size, gradient_accumulation_steps)`` of an effective batch."""
    micro = min(effective, max_micro)
    if effective % micro:
        raise ValueError(split_problem(effective, max_micro))
    return micro, effective // micro


def split_problem(effective: int, max_micro: int) -> str | None:
    """Why ``effective`` cannot be split with micro-batches of at most ``max_micro``, or None."""
    if effective <= max_micro or effective % max_micro == 0:
        return None
    return (f"effective_batch_size {effective} is larger than the micro-batch {max_micro} "
            f"(training.per_device_train_batch_size) but not a multiple of it; give multiples of {max_micro}, "
            "or a micro-batch that divides every choice")
