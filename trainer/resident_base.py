"""The base model a warm worker keeps loaded from one trial to the next.

Every trial of a study loads the same base model (the study's ``model`` section) and attaches its
own LoRA adapters. Loading an 8B base in 4-bit takes 5 to 7 s on an H100, a third of a later
trial's start-up, so a warm worker keeps it: after a trial that ended cleanly, its adapters are
taken out again (PEFT's ``unload()``: the LoRA layers are replaced by the base layers they wrapped,
the base weights never change during LoRA training) and the next trial with the same ``model``
section attaches its own to the same base. Any other model section, or a trial that did not end
cleanly, loads afresh. The tokenizer is handed out as a copy, so what one trial sets on it (chat
template, padding) never reaches the next.
"""

from __future__ import annotations

import copy
import gc


class ResidentBase:
    """One kept base model and tokenizer, keyed by what they were loaded from."""

    def __init__(self) -> None:
        self._key: str | None = None
        self._model = None
        self._tokenizer = None
        self.resident_mb = 0.0  # GPU memory the kept base holds, so the worker does not count it as a leak

    def take(self, key: str, load, device: str) -> tuple[object, object, bool]:
        """``(model, tokenizer, reused)``: the kept base for ``key``, or ``load()``'s fresh one.

        The GPU memory allocated around a fresh load is what the base holds while kept.
        """
        if self._key == key and self._model is not None:
            model, tokenizer = self._model, copy.deepcopy(self._tokenizer)
            self._model = None  # lent out: back only through keep()
            return model, tokenizer, True
        self.drop()
        before = allocated_mb(device)
        model, tokenizer = load()
        self.resident_mb = max(0.0, allocated_mb(device) - before)
        self._key, self._tokenizer = key, copy.deepcopy(tokenizer)
        return model, tokenizer, False

    def keep(self, peft_model) -> bool:
        """Take the trial's adapters out of ``peft_model`` (built on the base :meth:`take` lent) and keep
        that base for the next trial with the same key."""
        if self._key is None:  # dropped since it was lent
            return False
        try:
            base = peft_model.unload()
        except Exception:  # a model PEFT cannot unwrap is loaded afresh next time
            self.drop()
            return False
        for attribute in ("peft_config", "_hf_peft_config_loaded"):
            if attribute in base.__dict__:
                delattr(base, attribute)
        base.eval()
        for parameter in base.parameters():
            parameter.requires_grad_(False)
        self._model = base
        return True

    def drop(self) -> None:
        """Forget the kept base (its memory goes back once the trial's references are gone)."""
        self._key = self._model = self._tokenizer = None
        self.resident_mb = 0.0
        gc.collect()


def allocated_mb(device: str) -> float:
    """GPU memory allocated by this process (MiB); 0 on CPU."""
    if device != "cuda":
        return 0.0
    import torch

    return torch.cuda.memory_allocated() / 2**20
