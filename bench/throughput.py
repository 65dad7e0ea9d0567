"""Throughput of one trial through the sweep against the scripts a user would write, in one device call.

    python3 bench/throughput.py [--workdir /tmp/gpu-bench] [--steps 40] [--runs bare-unsloth,sweep,bare-hf]

Same random-weight Llama-3.1-8B-architecture model, data (synthetic chat, about 530 tokens a row) and
settings for all (QLoRA 4-bit, r=16, alpha 16, seven projections, batch 8, adamw_8bit, lr 2e-4 linear,
bf16, assistant-only loss):
1. ``bare-unsloth``: bench/bare_train.py unsloth (Unsloth + TRL, no orchestrator),
2. ``sweep``: one trial through ``python -m sweep run``,
3. ``bare-hf``: bench/bare_train.py hf (transformers + bitsandbytes + PEFT + TRL).
Prints a markdown table: steady tokens/s, peak GPU memory, seconds from process start to the first step,
and (sweep) seconds from the last step to the trial being recorded in the study.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from gpu_fixtures import ROOT, fixture_8b, sh, study_8b


def sweep_rows(work: Path, model: Path, data: Path, steps: int, n_trials: int) -> list[dict]:
    """Run a study of ``n_trials`` trials (``ENQUEUE``d first); one row per trial from its events and the study."""
    study = study_8b(work, "bench-sweep", steps, n_trials, model, data)
    runs = work / "runs"
    done = sh(sys.executable, "-m", "sweep", "run", "--study", str(study), "--runs-dir", str(runs), timeout=1200)
    print(done.stdout[-2000:], done.stderr[-2000:], flush=True)
    status = sh(sys.executable, "-m", "sweep", "status", "--study", str(study), "--runs-dir", str(runs), "--json")
    rows = []
    for trial in json.loads(status.stdout or "[]"):
        a = trial["user_attrs"]
        if "trial_dir" not in a:  # an enqueued configuration the study did not get to (n_trials < 3)
            continue
        events = [json.loads(line) for line in (Path(a["trial_dir"]) / "events.jsonl").read_text().splitlines()]
        phases = {e["name"]: round(e["seconds"], 1) for e in events if e["event"] == "phase"}
        notes = next((e["notes"] for e in events if e["event"] == "setup"), [])
        last_step = max(e["time"] for e in events if e["event"] == "progress")
        recorded = dt.datetime.fromisoformat(trial["datetime_complete"]).timestamp() if trial["datetime_complete"] else None
        rows.append({"run": f"sweep trial {trial['number']}", "tokens_per_second": round(a.get("tokens_per_second") or 0),
                     "peak_gib": round(a.get("peak_memory_mb", 0) / 1024, 2), "first_step_s": phases.get("first_step"),
                     "last_step_to_recorded_s": round(recorded - last_step, 1) if recorded else None,
                     "phases": phases, "state": trial["state"], "eval_loss": trial["value"],
                     "base": next((n.removeprefix("base=") for n in notes if n.startswith("base=")), None),
                     "gpu_leak_mb": next((e.get("gpu_leak_mb") for e in events if e["event"] == "result"), None)})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/gpu-bench"))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--sweep-trials", type=int, default=1)
    parser.add_argument("--runs", default="bare-unsloth,sweep,bare-hf")
    args = parser.parse_args()
    model, data = fixture_8b(args.workdir, args.steps)
    rows = []
    for run in args.runs.split(","):
        if run == "sweep":
            rows += sweep_rows(args.workdir, model, data, args.steps, args.sweep_trials)
            continue
        done = sh(sys.executable, str(ROOT / "bench" / "bare_train.py"), run.removeprefix("bare-"), str(model), str(data),
                  "--steps", str(args.steps), timeout=900)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        rows.append(json.loads(lines[-1]) if lines else {"run": run, "error": done.stderr[-800:]})
        print(rows[-1], flush=True)
    print("\n| run | tokens/s (steady) | peak GPU GiB | start to first step (s) | last step to recorded (s) | base | eval loss |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r.get('tokens_per_second', '-')} | {r.get('peak_gib', '-')} | {r.get('first_step_s', '-')} | "
              f"{r.get('last_step_to_recorded_s', '-')} | {r.get('base', '-')} | {r.get('eval_loss', '-')} |")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
