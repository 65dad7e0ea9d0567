"""Throughput of parallel trials on GPUs: the same small study at K = 1, 2, 4 trials per GPU.

For each K this writes a copy of the study (its own name, ``n_trials`` = K x GPUs x rounds, so
every K runs full rounds), runs ``python -m sweep run --gpus G --trials-per-gpu K`` on it, and
reads what the trials recorded: aggregate tokens/s (the train tokens of all complete trials over
the wall time from the first trial's start to the last one's end), trials per hour, the mean of
the trials' own steady tokens/s, and their peak memory. Nothing here imports torch.

Run it on a GPU host from the project root, e.g.::

    python bench/parallel_gpu.py --study studies/demo.yaml --gpus 0 --ks 1,2,4 --rounds 2
    python bench/parallel_gpu.py --study my-8b.yaml --gpus 0,1,2,3 --ks 1,2,4 --json bench-runs/result.json

State beside every figure what the study used (model, quantisation, rank, batch, sequence length,
backend): the study file of each K is kept under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True, help="study file (or name under studies/) to repeat at each K")
    parser.add_argument("--gpus", default="0", help="GPU indices, as for `sweep run --gpus` (default 0)")
    parser.add_argument("--ks", default="1,2,4", help="trials per GPU to compare (default 1,2,4)")
    parser.add_argument("--rounds", type=int, default=2, help="full rounds of K trials per GPU at each K (default 2)")
    parser.add_argument("--out", type=Path, default=Path("bench-runs"), help="folder for the runs (default bench-runs)")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = parser.parse_args()

    gpus = [g for g in args.gpus.split(",") if g.strip()]
    rows = []
    for k in (int(k) for k in args.ks.split(",")):
        study_file = write_study(args.study, args.out, k, k * len(gpus) * args.rounds)
        started = time.time()
        done = subprocess.run([sys.executable, "-m", "sweep", "run", "--study", str(study_file),
                               "--runs-dir", str(args.out / "runs"), "--gpus", args.gpus, "--trials-per-gpu", str(k)],
                              cwd=ROOT)
        row = {"k": k, "exit_code": done.returncode, "seconds": round(time.time() - started, 1),
               **measure(study_file.stem, args.out / "runs")}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print_table(rows)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(r["exit_code"] == 0 for r in rows) else 1


def write_study(name_or_path: str, out: Path, k: int, n_trials: int) -> Path:
    """The study resolved (absolute paths), renamed for K and set to ``n_trials``."""
    import yaml

    from sweep.study_file import load_study

    study = load_study(name_or_path)
    config = study.config.model_copy(deep=True)
    config.name = f"{study.name}-k{k}"
    config.search.n_trials = n_trials
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{config.name}.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True), sort_keys=False))
    return path


def measure(name: str, runs: Path) -> dict:
    """Aggregate figures from the complete trials' user attrs."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.ERROR)
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
    }


def print_table(rows: list[dict]) -> None:
    print(f"\n{'K':>3} {'trials':>7} {'failed':>7} {'span s':>8} {'tokens/s':>10} {'trials/h':>9} "
          f"{'per-trial tok/s':>16} {'peak MiB':>9}")
    for r in rows:
        print(f"{r['k']:>3} {r['complete']:>7} {r['failed']:>7} {r.get('span_seconds', '-'):>8} "
              f"{r.get('aggregate_tokens_per_second', '-'):>10} {r.get('trials_per_hour', '-'):>9} "
              f"{r.get('mean_trial_tokens_per_second') or '-':>16} {round(r.get('max_peak_memory_mb') or 0):>9}")


if __name__ == "__main__":
    sys.exit(main())
