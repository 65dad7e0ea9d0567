"""A group member's adapter written as an ordinary PEFT LoRA adapter.

``adapter_config.json`` comes from PEFT's own ``LoraConfig`` and ``adapter_model.safetensors`` holds
the keys PEFT writes for a causal LM (``base_model.model.<module>.lora_A.weight``), so
``PeftModel.from_pretrained(base, folder)`` loads it like any adapter trained by the TRL path.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from trainer.spec import TrialSpec
from trainer.trial_folder import ADAPTER_SPEC_FILE, ADAPTER_WEIGHTS_FILES

WEIGHTS_FILE = ADAPTER_WEIGHTS_FILES[0]  # safetensors, as PEFT writes by default


def peft_state_dict(weights: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """PEFT's saved keys for ``{module name: (lora_A, lora_B)}``."""
    state = {}
    for name, (a, b) in weights.items():
        state[f"base_model.model.{name}.lora_A.weight"] = a.detach().to("cpu").contiguous()
        state[f"base_model.model.{name}.lora_B.weight"] = b.detach().to("cpu").contiguous()
    return state


def write_adapter(spec: TrialSpec, weights: dict[str, tuple[torch.Tensor, torch.Tensor]], base_name: str,
                  folder: Path) -> None:
    """``adapter_config.json`` and ``adapter_model.safetensors`` of one member into ``folder``."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    lora = spec.lora
    config = LoraConfig(r=lora.r, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout, bias=lora.bias,
                        target_modules=lora.target_modules, use_rslora=lora.use_rslora, task_type="CAUSAL_LM",
                        base_model_name_or_path=base_name, inference_mode=True)
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(folder))
    save_file(peft_state_dict(weights), str(folder / WEIGHTS_FILE), metadata={"format": "pt"})


def save_group_adapter(spec: TrialSpec, weights: dict, tokenizer, base_name: str, final: Path) -> Path:
    """The adapter, tokenizer and spec under a temporary name, then renamed into place (as ``save_adapter``)."""
    partial = final.with_name(f".{final.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    write_adapter(spec, weights, base_name, partial)
    tokenizer.save_pretrained(str(partial))
    spec.write(partial / ADAPTER_SPEC_FILE)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    return final.resolve()
