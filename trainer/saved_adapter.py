"""The trial's adapter folder: written whole or not at all, and, for ``best_eval``, kept at the best eval point.

Every adapter is written under a temporary name and renamed into place, with the tokenizer, the
trial's spec and ``adapter_eval.json``: the step its weights are from, their eval loss, and the
owner record of :mod:`trainer.checkpoints` (study, folder, configuration).

With ``keep_adapter: best_eval`` in the spec, :class:`BestAdapter` saves the adapter whenever an eval
point improves on the best so far, so ``adapter/`` always holds the best weights seen. A trial
resumed from a checkpoint takes its best so far from the adapter on disk when that adapter is its own
(same owner record): the best survives a kill, and the trial's value is always the eval loss of the
weights it keeps, even where the killed run measured a point the checkpoint predates. A trial that
starts at step 0 removes any adapter left in its folder first.

    callback = BestAdapter(spec, tokenizer, resumed=start.path is not None)
    trainer = SFTTrainer(..., callbacks=[callback, ...]); trainer.train(...)
    callback.kept   # (step, eval_loss) of adapter/
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

from transformers import TrainerCallback

from trainer.checkpoints import owner_record
from trainer.spec import TrialSpec
from trainer.trial_folder import ADAPTER_DIR, ADAPTER_EVAL_FILE, ADAPTER_SPEC_FILE, ADAPTER_WEIGHTS_FILES


def save_adapter(spec: TrialSpec, model, tokenizer, step: int, eval_loss: float) -> Path:
    """Write the PEFT adapter, tokenizer, spec and eval record under a temporary name, then rename it into place."""
    final = spec.out / ADAPTER_DIR
    partial = spec.out / f".{ADAPTER_DIR}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(str(partial))
    tokenizer.save_pretrained(str(partial))
    spec.write(partial / ADAPTER_SPEC_FILE)
    record = {"step": step, "eval_loss": eval_loss, "owner": owner_record(spec)}
    (partial / ADAPTER_EVAL_FILE).write_text(json.dumps(record) + "\n")
    # the old folder goes aside, not away, until the new one is in place: a kill in between leaves one of them
    old = spec.out / f".{ADAPTER_DIR}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(partial, final)
    shutil.rmtree(old, ignore_errors=True)
    return final.resolve()


def own_adapter(spec: TrialSpec) -> tuple[int, float] | None:
    """(step, eval loss) of the adapter in ``spec``'s folder if this very trial wrote it, else None.

    An adapter a kill left aside (``.adapter.old``, see :func:`save_adapter`) is put back first.
    """
    final, old = spec.out / ADAPTER_DIR, spec.out / f".{ADAPTER_DIR}.old"
    if not final.exists() and old.exists():
        os.replace(old, final)
    try:
        record = json.loads((final / ADAPTER_EVAL_FILE).read_text())
    except (OSError, ValueError):
        return None
    if record.get("owner") != owner_record(spec):
        return None
    return int(record["step"]), float(record["eval_loss"])


def load_adapter_weights(model, folder: Path) -> None:
    """Put the adapter weights saved in ``folder`` back into ``model`` (a PEFT model of the same shape)."""
    from peft import set_peft_model_state_dict

    safetensors, binary = (Path(folder) / name for name in ADAPTER_WEIGHTS_FILES)
    if safetensors.is_file():
        from safetensors.torch import load_file

        weights = load_file(str(safetensors))
    else:
        import torch

        weights = torch.load(str(binary), map_location="cpu", weights_only=True)
    set_peft_model_state_dict(model, weights)


def remove_adapter(spec: TrialSpec) -> None:
    """Remove the adapter folder (and a half-written or set-aside one) of ``spec``'s trial."""
    for name in (ADAPTER_DIR, f".{ADAPTER_DIR}.partial", f".{ADAPTER_DIR}.old"):
        shutil.rmtree(spec.out / name, ignore_errors=True)


def improves(loss: float, best: float | None) -> bool:
    """Whether ``loss`` beats the best so far (the first loss always does; NaN never beats a number)."""
    if best is None:
        return True
    if math.isnan(loss):
        return False
    return math.isnan(best) or loss < best


class BestAdapter(TrainerCallback):
    """Saves the adapter at every eval point that improves on the best so far (see the module docstring)."""

    def __init__(self, spec: TrialSpec, tokenizer, resumed: bool) -> None:
        self.spec, self.tokenizer = spec, tokenizer
        self.kept = own_adapter(spec) if resumed else None
        if self.kept is None:
            remove_adapter(spec)  # another run's, or one this trial restarted from step 0 has no use for

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        loss = (metrics or {}).get("eval_loss")
        if loss is None or not improves(loss, self.kept[1] if self.kept else None):
            return
        save_adapter(self.spec, model, self.tokenizer, state.global_step, loss)
        self.kept = (state.global_step, loss)
