"""Loading the base model and attaching LoRA, with Unsloth or with transformers + PEFT.

``choose_backend`` picks Unsloth where it is installed and a GPU is present; it must run before
transformers or TRL are imported, because Unsloth patches them on import. Both backends return a
PEFT model whose adapter saves in PEFT's format, so it loads anywhere PEFT adapters load.
"""

from __future__ import annotations

import importlib.util

from trainer.spec import LoraSpec, ModelSpec


class ModelLoadError(ValueError):
    """The base model cannot be used (missing, not a causal LM, unreadable)."""


def choose_backend(requested: str) -> tuple[str, str]:
    """``(backend, device)``; imports torch (and Unsloth, when chosen) as a side effect."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "unsloth" or (requested == "auto" and device == "cuda" and importlib.util.find_spec("unsloth")):
        import unsloth  # noqa: F401  (patches transformers/trl: must come first)

        return "unsloth", device
    return "transformers", device


def torch_dtype(spec: ModelSpec, device: str):
    import torch

    if spec.dtype != "auto":
        return getattr(torch, spec.dtype)
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_in_4bit(spec: ModelSpec, device: str) -> bool:
    return device == "cuda" if spec.load_in_4bit is None else spec.load_in_4bit


def load_model(backend: str, spec: ModelSpec, device: str, seed: int):
    """The base model and its tokenizer."""
    quantize = load_in_4bit(spec, device)
    if quantize and device != "cuda":
        raise ModelLoadError("model.load_in_4bit needs a GPU (bitsandbytes); set it to false on CPU")
    dtype = torch_dtype(spec, device)
    try:
        if backend == "unsloth":
            from unsloth import FastLanguageModel

            return FastLanguageModel.from_pretrained(
                spec.name_or_path, max_seq_length=spec.max_seq_length, load_in_4bit=quantize, dtype=dtype
            )
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kwargs = {"dtype": dtype}
        if quantize:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype
            )
            kwargs["device_map"] = {"": 0}
        tokenizer = AutoTokenizer.from_pretrained(spec.name_or_path)
        model = AutoModelForCausalLM.from_pretrained(spec.name_or_path, **kwargs)
        if device == "cuda" and not quantize:
            model = model.to(device)
        return model, tokenizer
    except (OSError, ValueError, KeyError) as e:
        if "out of memory" in str(e).lower():
            raise
        raise ModelLoadError(f"cannot load {spec.name_or_path!r} as a causal LM: {str(e).splitlines()[0]}") from e


def attach_lora(backend: str, model, lora: LoraSpec, seed: int, quantized: bool, device: str):
    """The model with LoRA adapters on ``lora.target_modules``; only the adapters train."""
    if backend == "unsloth":
        from unsloth import FastLanguageModel

        return FastLanguageModel.get_peft_model(
            model, r=lora.r, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout, bias=lora.bias,
            target_modules=lora.target_modules, use_rslora=lora.use_rslora,
            use_gradient_checkpointing="unsloth", random_state=seed,
        )
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    torch.manual_seed(seed)
    config = LoraConfig(
        r=lora.r, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout, bias=lora.bias,
        target_modules=lora.target_modules, use_rslora=lora.use_rslora, task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, config)
    except ValueError as e:
        raise ModelLoadError(f"cannot attach LoRA: {str(e).splitlines()[0]}") from e
