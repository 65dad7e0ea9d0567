"""Throughput of parallel trials on GPUs: the same small study at K = 1, 2, 4 trials per GPU.

For each K this writes a copy of the study (its own name, ``n_trials`` = K x GPUs x rounds, so
every K runs full rounds), runs ``python -m sweep run --gpus G --trials-per-gpu K`` on it, and
reads what the trials recorded: aggregate tokens/s (the train tokens of all complete trials over
the wall time from the first trial's start to the last one's end), trials per hour, the mean of
the trials' own steady tokens/s, and their peak memory. Nothing here imports torch.

Run it on a GPU host from the project root, e.g.::

    python bench/parallel_gpu.py --study studies/demo.yaml --gpus 0 --ks 1,2,4 --rounds 2
    python bench/parallel_gpu.py --study my-8b.yaml --gpus 0,1,2,3 --ks 1,2,4 --json bench-runs/result.json
    python3 bench/parallel_gpu.py --fixture-8b /tmp/gpu-bench --steps 30 --gpus 0 --ks 1,2,4   # device
    python3 bench/parallel_gpu.py --fixture-8b /tmp/gpu-bench --steps 30 --gpus 0 --gpus 0,1 --ks 1 --rounds 3

``--fixture-8b DIR`` builds the random-weight Llama-3.1-8B-architecture model and synthetic chat of
bench/gpu_fixtures.py under DIR (once) and uses their study (QLoRA 4-bit, r=16, batch 8, about 530
tokens a row). ``--gpus`` may be given several times: each set is measured at each K. With it,
``--bare-ks 1,2,4`` first measures the baseline in the same call: K bench/bare_train.py Unsloth processes
started at once on the first GPU, no orchestrator, through the same steady window.

Two kinds of figure per run. Over the whole run, from the first trial's start to the last one's end
(what a user waits for, the workers' one-off start-up included): aggregate tokens/s and trials per
hour. In steady state: ``steady tokens/s`` counts the optimizer steps of all trials in the window
where every slot of the first round is training (from the last of them to reach its first step to
the first of them to take its last), ``steady trials/h`` is slots x 3600 / the mean duration of the
trials after the first round (created to recorded, so with the hand-over to the trainer; with a
kept base model and no import, as the trials of a long sweep run).

State beside every figure what the study used (model, quantisation, rank, batch, sequence length,
backend): the study file of each K is kept under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", help="study file (or name under studies/) to repeat at each K")
    parser.add_argument("--fixture-8b", type=Path, metavar="DIR",
                        help="instead of --study: the random-weight 8B model and synthetic chat, built under DIR")
    parser.add_argument("--steps", type=int, default=30, help="with --fixture-8b: optimizer steps per trial")
    parser.add_argument("--gpus", action="append", help="GPU indices, as for `sweep run --gpus` (default 0); repeatable")
    parser.add_argument("--ks", default="1,2,4", help="trials per GPU to compare (default 1,2,4; empty: none)")
    parser.add_argument("--rounds", type=int, default=2, help="full rounds of K trials per GPU at each K (default 2)")
    parser.add_argument("--out", type=Path, default=Path("bench-runs"), help="folder for the runs (default bench-runs)")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    parser.add_argument("--bare-ks", default="", help="with --fixture-8b: first run K bare Unsloth processes at once "
                        "on the first GPU of --gpus for each K here (e.g. 1,2,4), the baseline, in the same call")
    args = parser.parse_args()

    if (args.study is None) == (args.fixture_8b is None):
        parser.error("give one of --study and --fixture-8b")
    study = args.study
    if args.fixture_8b is not None:
        sys.path.insert(0, str(ROOT / "bench"))
        from gpu_fixtures import fixture_8b, study_8b

        model, data = fixture_8b(args.fixture_8b, args.steps)
        study = str(study_8b(args.fixture_8b, "parallel-8b", args.steps, 1, model, data))
    elif args.bare_ks:
        parser.error("--bare-ks needs --fixture-8b")
    rows = []
    for k in (int(k) for k in args.bare_ks.split(",") if k.strip()):
        rows.append(bare(k, (args.gpus or ["0"])[0].split(",")[0], model, data, args.steps, args.out))
        print(json.dumps(rows[-1]), flush=True)
    for gpu_set in args.gpus or ["0"]:
        gpus = [g for g in gpu_set.split(",") if g.strip()]
        for k in (int(k) for k in args.ks.split(",") if k.strip()):
            tag = f"g{len(gpus)}-k{k}"
            study_file = write_study(study, args.out, tag, k * len(gpus) * args.rounds)
            started = time.time()
            done = subprocess.run([sys.executable, "-m", "sweep", "run", "--study", str(study_file), "--runs-dir",
                                   str(args.out / "runs"), "--gpus", gpu_set, "--trials-per-gpu", str(k)], cwd=ROOT)
            row = {"gpus": gpu_set, "k": k, "exit_code": done.returncode, "seconds": round(time.time() - started, 1),
                   **measure(study_file.stem, args.out / "runs", k * len(gpus))}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print_table(rows)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(r["exit_code"] == 0 for r in rows) else 1


def write_study(name_or_path: str, out: Path, tag: str, n_trials: int) -> Path:
    """The study resolved (absolute paths), renamed for the run (``tag``) and set to ``n_trials``."""
    import yaml

    from sweep.schema.study_file import load_study

    study = load_study(name_or_path)
    config = study.config.model_copy(deep=True)
    config.name = f"{study.name}-{tag}"
    config.search.n_trials = n_trials
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{config.name}.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_unset=True), sort_keys=False))
    return path


def measure(name: str, runs: Path, slots: int) -> dict:
    """Aggregate figures from the complete trials' user attrs and events; ``slots`` run at once."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if not (runs / name / "study.db").exists():
        return {"complete": 0, "failed": 0}
    trials = optuna.load_study(study_name=name, storage=f"sqlite:///{(runs / name / 'study.db').resolve()}") \
        .get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        return {"complete": 0, "failed": len(trials)}
    span = (max(t.datetime_complete for t in complete) - min(t.datetime_start for t in complete)).total_seconds()
    tokens = sum(t.user_attrs.get("train_tokens") or 0 for t in complete)
    own = [t.user_attrs["tokens_per_second"] for t in complete if t.user_attrs.get("tokens_per_second")]
    return {
        "complete": len(complete), "failed": sum(t.state == TrialState.FAIL for t in trials),
        "span_seconds": round(span, 1), "aggregate_tokens_per_second": round(tokens / span, 1),
        "trials_per_hour": round(len(complete) / span * 3600, 2),
        "mean_trial_tokens_per_second": round(sum(own) / len(own), 1) if own else None,
        "max_peak_memory_mb": max((t.user_attrs.get("peak_memory_mb") or 0) for t in complete),
        "backend": complete[0].user_attrs.get("backend"),
        **steady(complete, slots),
    }


def steady(complete: list, slots: int) -> dict:
    """Steady-state figures from the trials' step events (see the module's docstring)."""
    steps = {}  # trial number -> [(time, step)]
    for t in complete:
        events = Path(t.user_attrs["trial_dir"]) / "events.jsonl"
        found = [json.loads(line) for line in events.read_text().splitlines()] if events.exists() else []
        steps[t.number] = [(e["time"], e["step"]) for e in found if e["event"] == "progress"]
    first_round = [t.number for t in sorted(complete, key=lambda t: t.datetime_start)[:slots]]
    per_step = {t.number: (t.user_attrs.get("train_tokens") or 0)
                / max(1, t.user_attrs.get("steps") or (steps[t.number] or [(0, 1)])[-1][1]) for t in complete}
    window = window_tokens_per_second(steps, per_step, first_round)
    if not window:
        return {}
    later = [t for t in complete if t.number not in first_round]
    cycle = statistics.mean((t.datetime_complete - t.datetime_start).total_seconds() for t in later) if later else None
    return {**window, "steady_trials_per_hour": round(slots * 3600 / cycle, 2) if cycle else None}


def window_tokens_per_second(steps: dict, per_step: dict, first_round: list) -> dict:
    """Tokens/s of all runs' optimizer steps (``steps``: run -> [(time, step)]; ``per_step``: run -> tokens a
    step) inside the window where every run of ``first_round`` trains: from the last of them to reach its
    first step to the first of them to take its last."""
    if any(not steps[run] for run in first_round):
        return {}
    t0 = max(steps[run][0][0] for run in first_round)
    t1 = min(steps[run][-1][0] for run in first_round)
    tokens = 0.0
    for run, timeline in steps.items():
        inside = [step for when, step in timeline if t0 <= when <= t1]
        if len(inside) > 1:
            tokens += (inside[-1] - inside[0]) * per_step[run]
    return {"steady_window_seconds": round(t1 - t0, 1),
            "steady_tokens_per_second": round(tokens / (t1 - t0), 1) if t1 - t0 > 5 else None}


def bare(k: int, gpu: str, model: Path, data: Path, steps: int, out: Path) -> dict:
    """``k`` bench/bare_train.py Unsloth processes started at once on ``gpu`` (the issue's baseline: plain
    processes, no orchestrator, torch's default threads), measured with the sweep's steady window."""
    import os

    run_dir = out / f"bare-k{k}"
    run_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    started = time.time()
    for i in range(k):
        log = run_dir / f"steps-{i}.jsonl"
        log.unlink(missing_ok=True)
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu, "UNSLOTH_COMPILE_LOCATION": str(run_dir / f"compiled-{i}")}
        procs.append((log, subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "bare_train.py"), "unsloth", str(model), str(data), "--steps",
             str(steps), "--steps-log", str(log), "--output-dir", str(run_dir / f"out-{i}")],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=(run_dir / f"stderr-{i}.log").open("w"), text=True)))
    results = []
    for _, proc in procs:
        out_text, _ = proc.communicate()
        lines = [line for line in out_text.splitlines() if line.startswith("{")]
        results.append(json.loads(lines[-1]) if lines else {"error": proc.returncode})
    seconds = round(time.time() - started, 1)
    steps_of = {i: [(e["time"], e["step"]) for e in map(json.loads, log.read_text().splitlines())] if log.exists() else []
                for i, (log, _) in enumerate(procs)}
    per_step = {i: 8 * (r.get("tokens_per_row") or 0) for i, r in enumerate(results)}
    ok = [r for r in results if "tokens_per_second" in r]
    return {"gpus": f"bare {gpu}", "k": k, "exit_code": max(p.returncode for _, p in procs), "seconds": seconds,
            "complete": len(ok), "failed": k - len(ok),
            "mean_trial_tokens_per_second": round(statistics.mean(r["tokens_per_second"] for r in ok), 1) if ok else None,
            "max_peak_memory_mb": max((r["peak_gib"] * 1024 for r in ok), default=0),
            "first_step_s": [r.get("first_step_s") for r in ok],
            **window_tokens_per_second(steps_of, per_step, list(steps_of))}


def print_table(rows: list[dict]) -> None:
    print("\n| GPUs | K | trials | failed | span s | tokens/s | trials/h | steady tokens/s | steady trials/h "
          "| per-trial tokens/s | peak MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['gpus']} | {r['k']} | {r['complete']} | {r['failed']} | {r.get('span_seconds', '-')} "
              f"| {r.get('aggregate_tokens_per_second', '-')} | {r.get('trials_per_hour', '-')} "
              f"| {r.get('steady_tokens_per_second') or '-'} | {r.get('steady_trials_per_hour') or '-'} "
              f"| {r.get('mean_trial_tokens_per_second') or '-'} | {round(r.get('max_peak_memory_mb') or 0)} |")


if __name__ == "__main__":
    sys.exit(main())
