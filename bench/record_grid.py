"""Record the real learning curves of a full grid, once, for the replay benchmark.

    nice python bench/record_grid.py                     # the tiny grid: about 30-45 min on a busy 2-core CPU
    nice python bench/record_grid.py --trials-per-gpu 1  # one trial at a time: slower, cleaner timings
    python bench/record_grid.py --grid smollm2 --gpus 0 --trials-per-gpu 16   # the real grid, on a GPU

1. Writes the small data set the grid trains on (the first rows of the study's source set, byte for
   byte: ``studies/data/grid-tiny/`` from the demo set, ``studies/data/grid-smollm2/`` from the
   Swedish set), so a trial is mostly training, not waiting.
2. Runs ``python -m sweep run --study studies/grid-NAME.yaml``: the real orchestrator, the grid
   sampler, no pruning, one trainer per configuration. Rerunning resumes.
3. Reads every complete trial back (Optuna's storage for the parameters, the trial's own
   ``events.jsonl`` for the eval loss and the time at each eval point) and writes one JSON object per
   configuration to ``bench/data/tiny_grid.jsonl`` (see :mod:`bench.replay` for the fields).

The trainers run with ``OMP_NUM_THREADS=1``: on a shared machine two-thread torch processes spin
against each other and a tiny trial's time swings tenfold; one thread each keeps times comparable.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATA = ROOT / "studies" / "data"
# grid name -> (source set, train rows, eval rows); the study is studies/grid-NAME.yaml
GRIDS = {"tiny": (DATA / "demo", 160, 32), "smollm2": (DATA / "sv-translate", 480, 96)}
DEFAULT_OUT = {"tiny": "tiny_grid.jsonl", "smollm2": "smollm2_grid.jsonl"}


def study_file(grid: str) -> Path:
    return ROOT / "studies" / f"grid-{grid}.yaml"


def write_subset(grid: str) -> None:
    """The first rows of the grid's source set (byte for byte), so the grid's data is fixed and small."""
    source, train_rows, eval_rows = GRIDS[grid]
    subset = DATA / f"grid-{grid}"
    subset.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.jsonl", train_rows), ("eval.jsonl", eval_rows)):
        lines = (source / name).read_text(encoding="utf-8").splitlines(keepends=True)[:rows]
        (subset / name).write_text("".join(lines), encoding="utf-8")


def run_grid(grid: str, runs_dir: Path, trials_per_gpu: int, gpus: str | None) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "sweep", "run", "--study", str(study_file(grid)), "--runs-dir", str(runs_dir),
               "--trials-per-gpu", str(trials_per_gpu), *(["--gpus", gpus] if gpus else [])]
    return subprocess.call(command, cwd=ROOT, env=env)


def curve_record(trial) -> dict | None:
    """One complete trial as a row of the table, or None if its events are missing."""
    from trainer.events import Evaluation, Result, Setup, Started, read_all

    if "trial_dir" not in trial.user_attrs:  # a repeat of an earlier trial: nothing of its own was trained
        return None
    events = read_all(Path(trial.user_attrs["trial_dir"]) / "events.jsonl")
    started = next((e for e in events if isinstance(e, Started)), None)
    setup = next((e for e in events if isinstance(e, Setup)), None)
    result = next((e for e in events if isinstance(e, Result)), None)
    if started is None or setup is None or result is None or result.status != "ok":
        return None
    evaluations = [e for e in events if isinstance(e, Evaluation) and e.point is not None]
    setup_seconds = setup.time - started.time
    if setup.resumed_from_step:
        seconds_at = _resumed_clock(setup, evaluations, setup_seconds)
        total = seconds_at(setup.total_steps) + (result.time - evaluations[-1].time)
    else:
        seconds_at = {e.step: e.time - started.time for e in evaluations}.__getitem__
        total = trial.user_attrs["wall_seconds"]
    points = [{"point": e.point, "step": e.step, "eval_loss": e.eval_loss, "seconds": round(seconds_at(e.step), 3)}
              for e in evaluations]
    return {
        "params": {**trial.params, "lora_alpha": trial.user_attrs["lora_alpha"],
                   "use_rslora": trial.user_attrs["use_rslora"]},
        "total_steps": setup.total_steps,
        "setup_seconds": round(setup_seconds, 3),
        "points": points,
        "eval_loss": result.eval_loss,
        "seconds": round(total, 3),
        "trial": trial.number,
        **({"resumed_from_step": setup.resumed_from_step} if setup.resumed_from_step else {}),
        **({"chrf": result.chrf} if result.chrf is not None else {}),
    }


def _resumed_clock(setup, evaluations, setup_seconds: float):
    """Seconds from the start at each step of a trial that was interrupted and resumed.

    Its eval losses are its own (restored from the checkpoint, then measured), but the clock of the
    run before the interruption is gone: each step is charged the resumed run's own seconds per step,
    after one set-up. The row says ``resumed_from_step`` so a reader knows its times are estimated.
    """
    fresh = [e for e in evaluations if not e.restored]
    first_step, first_time = (setup.resumed_from_step, setup.time) if len(fresh) < 2 else (fresh[0].step, fresh[0].time)
    per_step = (fresh[-1].time - first_time) / max(1, fresh[-1].step - first_step)
    return lambda step: setup_seconds + step * per_step


def export(grid: str, runs_dir: Path, out: Path) -> tuple[int, int]:
    """Write the table; returns (rows written, grid size)."""
    import optuna

    from sweep.schema.samplers import grid_size
    from sweep.schema.study_file import load_study
    from sweep.study.storage import default_storage_url

    study = load_study(str(study_file(grid)), resolve_paths=False)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    optuna_study = optuna.load_study(study_name=study.name, storage=default_storage_url(runs_dir, study.name))
    rows: dict[tuple, dict] = {}
    for trial in optuna_study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        record = curve_record(trial)
        key = tuple(sorted(trial.params.items()))
        if record is not None and key not in rows:  # a parallel grid run may repeat a point; keep the first
            rows[key] = record
    out.parent.mkdir(parents=True, exist_ok=True)
    ordered = sorted(rows.values(), key=lambda r: r["trial"])
    out.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in ordered))
    return len(ordered), grid_size(study.config.search.params)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", choices=sorted(GRIDS), default="tiny", help="which grid (studies/grid-NAME.yaml)")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs", help="where the grid study runs")
    parser.add_argument("--out", type=Path, help="the table (default: bench/data/NAME_grid.jsonl)")
    parser.add_argument("--trials-per-gpu", type=int, default=2, help="trials at once (per GPU, or CPU slots)")
    parser.add_argument("--gpus", help="GPU indices, as for sweep run (default: the CPU, or the only GPU)")
    parser.add_argument("--export-only", action="store_true", help="only write the table from a finished run")
    args = parser.parse_args()
    out = args.out or ROOT / "bench" / "data" / DEFAULT_OUT[args.grid]
    write_subset(args.grid)
    if not args.export_only:
        code = run_grid(args.grid, args.runs_dir, args.trials_per_gpu, args.gpus)
        if code != 0:
            print(f"sweep run exited with {code}; rerun to resume", file=sys.stderr)
    written, size = export(args.grid, args.runs_dir, out)
    print(f"{out}: {written} of {size} grid configurations")
    return 0 if written == size else 1


if __name__ == "__main__":
    sys.exit(main())
