"""The GPU path, checked end to end in one device call (see docs/BENCHMARKS.md; what the host needs: docs/gpu.md).

    python3 bench/gpu_check.py [--workdir /tmp/gpu-check] [--steps 12]

1. builds a random-weight Llama-3.1-8B-architecture model and a Llama-3 tokenizer (trainer.make_model 8b),
2. writes a small synthetic chat set (about 530 tokens a row),
3. runs `python -m sweep run` on two studies: QLoRA (4-bit base, 2 trials) and 16-bit LoRA (1 trial),
   both with the Llama-3 chat template and loss on assistant tokens only,
4. reloads every adapter twice, with plain PEFT (transformers + bitsandbytes) and with Unsloth, and
   generates a few tokens from each,
5. prints a table of trials (state, backend, tokens/s, peak memory, start-up phases) and reloads.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from gpu_fixtures import ensure_model, sh, synthetic_chat

STUDY = """
model:
  name_or_path: {model}
  max_seq_length: 2048
  load_in_4bit: {four_bit}
  chat_template: llama-3
data:
  train: {data}/train.jsonl
  eval: {data}/eval.jsonl
  train_on_responses_only: true
training:
  per_device_train_batch_size: 8
  per_device_eval_batch_size: 8
  max_steps: {steps}
  warmup_steps: 2
  optim: adamw_8bit
  eval_points: 2
samples:
  count: 1
  max_new_tokens: 8
search:
  n_trials: {n_trials}
  params:
    learning_rate: {{low: 1.0e-4, high: 1.0e-3, log: true}}
    r: {{choices: [8, 16]}}
    lora_alpha: 16
  sampler: {{name: random, seed: 1}}
  pruner: {{name: none}}
execution:
  backend: auto
  timeout_minutes: 8
"""

RELOAD = r"""
import sys, json, time
adapter, how, quantized = sys.argv[1], sys.argv[2], sys.argv[3] == "True"
t = time.time()
if how == "unsloth":
    import unsloth
    from unsloth import FastLanguageModel
    model, tok = FastLanguageModel.from_pretrained(adapter, max_seq_length=2048, load_in_4bit=quantized)
    FastLanguageModel.for_inference(model)
else:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    cfg = json.load(open(adapter + "/adapter_config.json"))
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16) if quantized else None
    base = AutoModelForCausalLM.from_pretrained(cfg["base_model_name_or_path"], dtype=torch.bfloat16,
                                                quantization_config=q, device_map={"": 0})
    model = PeftModel.from_pretrained(base, adapter)
    tok = AutoTokenizer.from_pretrained(adapter)
prompt = tok.apply_chat_template([{"role": "user", "content": "w100 w200 w300"}], tokenize=False, add_generation_prompt=True)
ids = tok(prompt, add_special_tokens=False, return_tensors="pt").to("cuda")
out = model.generate(**ids, max_new_tokens=6, do_sample=False)
print(json.dumps({"new_tokens": int(out.shape[1] - ids["input_ids"].shape[1]), "seconds": round(time.time() - t, 1)}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/gpu-check"))
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--skip-16bit", action="store_true")
    parser.add_argument("--four-bit-trials", type=int, default=2)
    args = parser.parse_args()
    work = args.workdir
    model, data, runs = work / "llama-8b", work / "data", work / "runs"
    data.mkdir(parents=True, exist_ok=True)
    ensure_model(model)
    synthetic_chat(data / "train.jsonl", 96, 1)
    synthetic_chat(data / "eval.jsonl", 16, 2)
    studies = [("gpu-4bit", True, args.four_bit_trials)] + ([] if args.skip_16bit else [("gpu-16bit", False, 1)])
    rows = []
    for name, four_bit, n in studies:
        path = work / f"{name}.yaml"
        path.write_text(STUDY.format(model=model, four_bit=str(four_bit).lower(), data=data, steps=args.steps, n_trials=n))
        t = time.time()
        done = sh(sys.executable, "-m", "sweep", "run", "--study", str(path), "--runs-dir", str(runs))
        print(f"== {name}: rc={done.returncode} in {time.time() - t:.0f}s\n{done.stdout[-1500:]}{done.stderr[-1500:]}", flush=True)
        status = sh(sys.executable, "-m", "sweep", "status", "--study", str(path), "--runs-dir", str(runs), "--json")
        for trial in json.loads(status.stdout or "[]"):
            rows.append((name, four_bit, trial))
    print("\n| study | trial | state | backend | tok/s | peak GiB | eval_loss | start-up phases (s) | reload PEFT | reload Unsloth |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, four_bit, trial in rows:
        a = trial["user_attrs"]
        events = Path(a["trial_dir"]) / "events.jsonl"
        phases = {e["name"]: round(e["seconds"], 1) for e in map(json.loads, events.read_text().splitlines())
                  if e["event"] == "phase"}
        reloads = []
        for how in ("peft", "unsloth"):
            if trial["state"] != "COMPLETE":
                reloads.append("-")
                continue
            done = sh(sys.executable, "-c", RELOAD, a["adapter_path"], how, str(four_bit), timeout=600)
            last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr.strip()[-300:]
            reloads.append(last)
        tps = f"{a['tokens_per_second']:.0f}" if a.get("tokens_per_second") else "-"
        mem = f"{a['peak_memory_mb'] / 1024:.1f}" if a.get("peak_memory_mb") else "-"
        value = f"{trial['value']:.3f}" if trial["value"] is not None else a.get("fail_reason", "-")
        print(f"| {name} | {trial['number']} | {trial['state']} | {a.get('backend')} | {tps} | {mem} | {value} | "
              f"{phases} | {reloads[0]} | {reloads[1]} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
