"""Merge a trial's LoRA adapter into its base model: ``python -m trainer.merge ADAPTER_DIR OUT_DIR``.

Started by ``python -m sweep export --merge`` (the orchestrator never imports torch); you can run it
by hand too. The base model and how it was loaded come from the adapter's ``trial_spec.json``.

- With Unsloth on a GPU: Unsloth's ``save_pretrained_merged(save_method="merged_16bit")``, which
  merges into the base's 16-bit weights even when the trial trained on a 4-bit base.
- Otherwise (CPU, or no Unsloth): PEFT's ``merge_and_unload`` on the CPU, in float32 so that
  adding the low-rank product loses nothing, then cast to ``--dtype``.

``--dtype auto`` writes the precision the trial trained in on this machine (the study's
``model.dtype``; for ``auto`` that is bfloat16/float16 on a GPU, float32 on a CPU). Rounding a
float32-trained model to 16 bits changes its greedy output, so a CPU trial stays float32 unless
asked otherwise.

Exit codes: 0 merged, 2 bad input (not an adapter folder, base model gone), 1 any other error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainer.spec import DTYPES, TrialSpec
from trainer.trial_folder import ADAPTER_SPEC_FILE, adapter_complete, adapter_contents


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.merge", description=__doc__.splitlines()[0])
    parser.add_argument("adapter", type=Path, help="the trial's adapter folder (PEFT format, with trial_spec.json)")
    parser.add_argument("out", type=Path, help="folder to write the merged model and tokenizer to")
    parser.add_argument("--dtype", choices=DTYPES, default="auto", help="weights' dtype (default: the trial's)")
    args = parser.parse_args(argv)
    if not adapter_complete(args.adapter):
        print(f"error: {args.adapter}: not a trial's adapter folder (needs {adapter_contents()})", file=sys.stderr)
        return 2
    from trainer.backends import ModelLoadError

    try:
        merged = merge(TrialSpec.read(args.adapter / ADAPTER_SPEC_FILE), args.adapter, args.out, args.dtype)
    except ModelLoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"merged {args.adapter} into {merged}")
    return 0


def merge(spec: TrialSpec, adapter: Path, out: Path, dtype: str = "auto") -> Path:
    """Write the base model with the adapter merged in, and the adapter's tokenizer, to ``out``."""
    from trainer.backends import choose_backend

    backend, device = choose_backend(spec.backend)
    if backend == "unsloth" and dtype == "auto":
        return _merge_unsloth(spec, adapter, out, device)
    return _merge_peft(spec, adapter, out, _dtype(spec, device, dtype))


def _dtype(spec: TrialSpec, device: str, requested: str):
    import torch

    from trainer.backends import torch_dtype

    return torch_dtype(spec.model, device) if requested == "auto" else getattr(torch, requested)


def _merge_unsloth(spec: TrialSpec, adapter: Path, out: Path, device: str) -> Path:
    from unsloth import FastLanguageModel

    from trainer.backends import load_in_4bit, torch_dtype

    # given an adapter folder, Unsloth loads the base named in adapter_config.json and attaches the adapter
    model, tokenizer = FastLanguageModel.from_pretrained(
        str(adapter), max_seq_length=spec.model.max_seq_length, load_in_4bit=load_in_4bit(spec.model, device),
        dtype=torch_dtype(spec.model, device),
    )
    model.save_pretrained_merged(str(out), tokenizer, save_method="merged_16bit")
    return out


def _merge_peft(spec: TrialSpec, adapter: Path, out: Path, dtype) -> Path:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.backends import ModelLoadError

    name = spec.model.name_or_path
    if Path(name).is_absolute() and not (Path(name) / "config.json").is_file():
        raise ModelLoadError(f"the base model {name} is gone (no config.json there); "
                             f"the adapter's {ADAPTER_SPEC_FILE} names it as model.name_or_path")
    base = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    model = model.to(dtype)
    model.config.dtype = dtype
    model.save_pretrained(str(out), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(adapter)).save_pretrained(str(out))
    return out


if __name__ == "__main__":
    sys.exit(main())
