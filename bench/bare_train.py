"""The baseline a user would write by hand: one LoRA fine-tune with no orchestrator, timed.

    python3 bench/bare_train.py unsloth MODEL_DIR DATA.jsonl --steps 40
    python3 bench/bare_train.py hf      MODEL_DIR DATA.jsonl --steps 40

``unsloth``: FastLanguageModel (4-bit) + TRL SFTTrainer. ``hf``: transformers + bitsandbytes (nf4) +
PEFT + TRL, gradient checkpointing, sdpa. Both: r=16, alpha 16, all seven projections, batch 8,
adamw_8bit, lr 2e-4 linear, warm-up 5, bf16, loss on assistant tokens only (TRL's
assistant_only_loss through the template's generation markers). Prints one JSON line: steady-state
tokens/s (steps after the first two), peak GPU memory, seconds from process start to the first step.
"""

import time

STARTED = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("backend", choices=["unsloth", "hf"])
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--steps-log", type=Path, help="append one JSON line per optimizer step: time and step")
    parser.add_argument("--output-dir", default="/tmp/bare-out")
    args = parser.parse_args()

    if args.backend == "unsloth":
        import unsloth  # noqa: F401
        from unsloth import FastLanguageModel

        model, tok = FastLanguageModel.from_pretrained(args.model, max_seq_length=2048, load_in_4bit=True, dtype=None)
        model = FastLanguageModel.get_peft_model(
            model, r=16, lora_alpha=16, lora_dropout=0, bias="none", target_modules=TARGETS,
            use_gradient_checkpointing="unsloth", random_state=3407)
    else:
        import torch
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
        from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

        tok = AutoTokenizer.from_pretrained(args.model)
        q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
        model = AutoModelForCausalLM.from_pretrained(args.model, quantization_config=q, dtype=torch.bfloat16,
                                                     attn_implementation="sdpa", device_map={"": 0})
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=16, lora_dropout=0.0, bias="none",
                                                 task_type="CAUSAL_LM", target_modules=TARGETS))
    import torch
    from datasets import load_dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    class Clock(TrainerCallback):
        def __init__(self, log: Path | None):
            self.first = self.t2 = self.t_end = None
            self.steps = 0
            self.log = log.open("a") if log else None

        def on_step_end(self, args, state, control, **kw):
            now = time.time()
            if self.log:
                self.log.write(json.dumps({"time": now, "step": state.global_step}) + "\n")
                self.log.flush()
            if self.first is None:
                self.first = now - STARTED
            if state.global_step == 2:
                self.t2 = now
            elif state.global_step > 2:
                self.t_end, self.steps = now, state.global_step - 2

    data = load_dataset("json", data_files=args.data, split="train")
    config = SFTConfig(
        output_dir=args.output_dir, per_device_train_batch_size=8, gradient_accumulation_steps=1, warmup_steps=5,
        max_steps=args.steps, learning_rate=2e-4, bf16=True, logging_steps=1, optim="adamw_8bit",
        weight_decay=0.01, lr_scheduler_type="linear", seed=3407, max_length=2048, report_to="none",
        assistant_only_loss=True, save_strategy="no", gradient_checkpointing=args.backend == "hf",
        disable_tqdm=True,
    )
    clock = Clock(args.steps_log)
    trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tok, callbacks=[clock])
    lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
    trainer.train()
    tokens_per_step = sum(lengths) / len(lengths) * 8
    print(json.dumps({
        "run": f"bare-{args.backend}", "tokens_per_second": round(clock.steps * tokens_per_step / (clock.t_end - clock.t2)),
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2), "first_step_s": round(clock.first, 1),
        "tokens_per_row": round(sum(lengths) / len(lengths)),
    }), flush=True)


if __name__ == "__main__":
    main()
