"""An estimate of one trial's peak GPU memory, from the study file and the model's ``config.json``.

Used by ``--trials-per-gpu auto`` to decide how many trials share a GPU. It is an estimate, meant
to err high; a trial that still does not fit fails with ``oom`` and is placed again alone (see
``sweep.launch.gpu_slots``). The parts:

- base weights: the decoder's linear layers in 4 bits (0.5625 bytes a weight with the scales) under
  QLoRA, else in the compute dtype; embeddings and the LM head always in the compute dtype;
- LoRA: its weights, gradients and two Adam moments in float32 (16 bytes a parameter), at the
  largest rank and on the most modules the search can pick;
- activations of the largest micro-batch the search can pick, at ``model.max_seq_length`` tokens a
  row: one layer's working set,
  plus a checkpointed hidden state per layer (Unsloth offloads those to CPU memory);
- logits: with transformers + PEFT the full ``batch x tokens x vocab`` in the compute dtype, its
  float32 copy and its gradient; Unsloth computes the loss in chunks (a quarter of one copy);
- a fixed 1 GiB for the CUDA context and allocator slack.

Measured on an H100 (Llama-3.1-8B, QLoRA r=16 on 7 projections, batch 8 of about 530 tokens):
transformers + PEFT peaked at 13.3 GiB (this estimate: 14.0), Unsloth at 6.9 GiB (estimate: 8.2).
Nothing here imports torch or transformers.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from sweep.errors import UserError
from sweep.schema.study_file import Study

GIB = 2**30
OVERHEAD_BYTES = 1 * GIB
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "auto": 2}
NF4_BYTES = 0.5625  # 4-bit weights plus their blockwise scales (double quantisation)


def estimate_trial_gib(study: Study, backend: str | None = None) -> float:
    """Peak GPU memory of one trial of ``study`` in GiB; ``backend`` ('unsloth' or 'transformers')
    defaults to the one its trials will use on a GPU."""
    c = study.config
    backend = backend or gpu_backend(c.execution.backend)
    cfg = _text_config(model_config(c.model.name_or_path))
    hidden, layers, vocab = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    inter = cfg.get("intermediate_size", 4 * hidden)
    heads = cfg.get("num_attention_heads", 1)
    head_dim = cfg.get("head_dim") or hidden // heads
    kv = cfg.get("num_key_value_heads") or heads
    shapes = {  # (in, out) of each projection LoRA may adapt
        "q_proj": (hidden, heads * head_dim), "k_proj": (hidden, kv * head_dim), "v_proj": (hidden, kv * head_dim),
        "o_proj": (heads * head_dim, hidden), "gate_proj": (hidden, inter), "up_proj": (hidden, inter),
        "down_proj": (inter, hidden),
    }
    dtype = DTYPE_BYTES[c.model.dtype]
    quantized = True if c.model.load_in_4bit is None else c.model.load_in_4bit
    linear = layers * sum(i * o for i, o in shapes.values())
    embeddings = vocab * hidden * (1 if cfg.get("tie_word_embeddings") else 2)
    weights = linear * (NF4_BYTES if quantized else dtype) + embeddings * dtype

    rank = max_rank(study)
    lora = layers * sum(rank * sum(shapes.get(m, (hidden, hidden))) for m in widest_modules(study)) * 16

    tokens = max_micro_batch(study) * c.model.max_seq_length
    checkpoints = hidden * layers if backend == "transformers" else 0
    activations = tokens * (checkpoints + 8 * hidden + 4 * inter) * dtype
    logits = tokens * vocab * ((dtype + 4 + 4) if backend == "transformers" else dtype / 4)
    return (weights + lora + activations + logits + OVERHEAD_BYTES) / GIB


def gpu_backend(backend: str) -> str:
    """The backend a trial on a GPU uses: 'auto' is Unsloth where it is installed (as the trainer decides)."""
    if backend != "auto":
        return backend
    return "unsloth" if importlib.util.find_spec("unsloth") else "transformers"


def max_rank(study: Study) -> int:
    """The largest LoRA rank the study's search can pick."""
    r = study.config.search.params.r
    return r.value or (max(r.choices) if r.choices else r.high)


def model_config(name_or_path: str) -> dict:
    """The model's ``config.json``: from its folder, or from the Hugging Face cache for a hub id."""
    path = Path(name_or_path) / "config.json"
    if not path.is_file():
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name_or_path, "config.json")
        if not isinstance(cached, str):
            raise UserError(f"--trials-per-gpu auto: cannot read the config.json of {name_or_path!r} (not a local "
                            "folder, not in the Hugging Face cache); give a number of trials per GPU")
        path = Path(cached)
    return json.loads(path.read_text())


def _text_config(cfg: dict) -> dict:
    """The language model's part of a config (multimodal models nest it under ``text_config``)."""
    return cfg.get("text_config") or cfg


def max_micro_batch(study: Study) -> int:
    """The largest micro-batch a trial can run (an effective batch never exceeds the fixed one)."""
    searched = study.config.search.params.per_device_train_batch_size
    return max(searched.values()) if searched is not None else study.config.training.per_device_train_batch_size


def widest_modules(study: Study) -> set[str]:
    """Every module some trial may adapt."""
    searched = study.config.search.params.target_modules
    if searched is None:
        return set(study.config.lora.target_modules)
    return {m for choice in searched.choices for m in searched.modules(choice)}
