"""Tokens per second of a whole sweep on one GPU: separate trainers against one group worker, same trials.

    python3 bench/sweep_throughput.py --study studies/grid-smollm2.yaml --trials 16 --trials-per-gpu 16 \\
        --backends transformers,grouped --group-matmul bmm --runs-dir /tmp/throughput

For each backend the study file is copied with ``execution.backend`` (and ``group_matmul``,
``group_cuda_graphs`` with ``--cuda-graphs``) set, its
paths made absolute, its samples off (``--samples`` keeps them) and a seeded random sampler over its own
space, so every backend trains the same ``--trials`` configurations; then ``python -m sweep run`` runs it
as a user would (``--trials-per-gpu``, ``--gpus``). Reported per backend: the sweep's tokens per second
(all trials' training tokens over the span from the first trial's start to the last one's end), the
median trial's own tokens per second, the wall time, each configuration's eval loss beside the first
backend's, and for a grouped run its worker's ledger (:mod:`trainer.group.ledger`: where its time
went, the mean trials a step, how many trials' samples in how many batches). With ``--alone``, each
trial of a grouped run is trained again by itself (a group of one, the same matmul and CPU threads)
and the report says how many eval losses are the same bit for bit, and the largest difference.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def study_copy(source: Path, backend: str, matmul: str, trials: int, folder: Path, samples: bool = False,
               cuda_graphs: bool = False) -> Path:
    study = yaml.safe_load(source.read_text())
    base = source.parent
    study["name"] = f"{source.stem}-{backend}"
    if (base / study["model"]["name_or_path"]).exists():  # a local folder, not a hub id
        study["model"]["name_or_path"] = str((base / study["model"]["name_or_path"]).resolve())
    for key in ("train", "eval"):
        if study["data"].get(key):
            study["data"][key] = str((base / study["data"][key]).resolve())
    if not samples:
        study["samples"] = {"count": 0}
    study["search"].update(n_trials=trials, sampler={"name": "random", "seed": 0}, pruner={"name": "none"},
                           enqueue=[])
    grouped = {"group_matmul": matmul, **({"group_cuda_graphs": True} if cuda_graphs else {})}
    study.setdefault("execution", {}).update(backend=backend, **(grouped if backend == "grouped" else {}))
    path = folder / f"{study['name']}.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def measure(path: Path, runs: Path, trials_per_gpu: int, gpus: str | None, stop_after: float | None = None) -> dict:
    import optuna

    from sweep.study.storage import default_storage_url

    sweep = subprocess.Popen([sys.executable, "-m", "sweep", "run", "--study", str(path), "--runs-dir", str(runs),
                              "--trials-per-gpu", str(trials_per_gpu), *(["--gpus", gpus] if gpus else [])], cwd=ROOT)
    try:
        code = sweep.wait(timeout=stop_after)
    except subprocess.TimeoutExpired:  # Ctrl-C, as a user stops a sweep: the finished trials are measured
        sweep.send_signal(signal.SIGINT)
        code = sweep.wait()
    name = yaml.safe_load(path.read_text())["name"]
    if code == 2:  # refused before the study existed
        return {"study": name, "exit": code, "complete": 0}
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=name, storage=default_storage_url(runs, name))
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    if not done:
        return {"study": name, "exit": code, "complete": 0}
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    tokens = sum(t.user_attrs.get("train_tokens", 0) for t in done)
    ledgers = [json.loads(p.read_text()) for p in sorted((runs / name / "workers").glob("group-*/ledger.json"))]
    return {"study": name, "exit": code, "complete": len(done), "span_s": round(span, 1),
            "tokens_per_s": round(tokens / span), "train_tokens": tokens,
            "median_trial_tokens_per_s": round(statistics.median(t.user_attrs.get("tokens_per_second", 0)
                                                                 for t in done)),
            **({"group_ledgers": ledgers} if ledgers else {}),
            "eval_loss": {json.dumps(t.params, sort_keys=True): t.value for t in done}}


def alone(runs: Path, name: str, matmul: str, trials_per_gpu: int) -> dict:
    """Each complete trial of the grouped study ``name`` trained by itself; how many eval losses are the same."""
    import optuna

    from sweep.launch.trainer_process import cpu_threads_env
    from sweep.study.storage import default_storage_url
    from trainer.spec import TrialSpec

    study = optuna.load_study(study_name=name, storage=default_storage_url(runs, name))
    env = {**os.environ, "PYTHONPATH": str(ROOT), **cpu_threads_env(trials_per_gpu)}  # the group worker's threads
    diffs = []
    with tempfile.TemporaryDirectory(prefix="alone-") as scratch:
        for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
            spec = TrialSpec.read(Path(trial.user_attrs["trial_dir"]) / "spec.json")
            out = Path(scratch) / str(trial.number)
            spec = spec.model_copy(update={"output_dir": str(out), "samples": spec.samples.model_copy(update={"count": 0})})
            out.mkdir()
            spec.write(out / "spec.json")
            subprocess.run([sys.executable, "-m", "trainer.group", "--matmul", matmul, str(out / "spec.json")],
                           cwd=ROOT, env=env, capture_output=True, check=True)
            result = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()][-1]
            diffs.append(abs(result["eval_loss"] - trial.value))
    return {"trials": len(diffs), "same_bit_for_bit": sum(d == 0 for d in diffs),
            "max_abs_eval_loss_diff": max(diffs, default=0.0)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, default=ROOT / "studies" / "grid-smollm2.yaml")
    parser.add_argument("--backends", default="transformers,grouped")
    parser.add_argument("--group-matmul", default="stacked", choices=["loop", "bmm", "stacked"])
    parser.add_argument("--cuda-graphs", action="store_true", help="grouped: execution.group_cuda_graphs true")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--trials-per-gpu", type=int, default=16)
    parser.add_argument("--runs-dir", type=Path, default=Path("/tmp/throughput"))
    parser.add_argument("--gpus", help="as for sweep run (default: the CPU, or the only GPU)")
    parser.add_argument("--samples", action="store_true", help="keep the study's samples (default: none)")
    parser.add_argument("--alone", action="store_true", help="train each trial of a grouped run alone and compare")
    parser.add_argument("--stop-after", type=float, metavar="SECONDS",
                        help="stop each sweep with Ctrl-C after this long and measure the trials it finished")
    args = parser.parse_args()
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for backend in args.backends.split(","):
        path = study_copy(args.study.resolve(), backend, args.group_matmul, args.trials, args.runs_dir, args.samples,
                          args.cuda_graphs)
        results.append(measure(path, args.runs_dir, args.trials_per_gpu, args.gpus, args.stop_after))
        if args.alone and backend == "grouped" and results[-1]["complete"]:
            results[-1]["alone"] = alone(args.runs_dir, results[-1]["study"], args.group_matmul, args.trials_per_gpu)
        print(json.dumps({k: v for k, v in results[-1].items() if k != "eval_loss"}), flush=True)
    first = results[0].get("eval_loss", {})
    for other in results[1:]:
        diffs = [abs(v - first[k]) for k, v in other.get("eval_loss", {}).items() if k in first]
        if diffs:
            print(json.dumps({"compare": f"{other['study']} vs {results[0]['study']}", "configs": len(diffs),
                              "max_abs_eval_loss_diff": round(max(diffs), 4),
                              "median_abs_eval_loss_diff": round(statistics.median(diffs), 4)}), flush=True)
    print(json.dumps(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
