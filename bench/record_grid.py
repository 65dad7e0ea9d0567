"""Record the real learning curves of the full tiny-model grid, once, for the replay benchmark.

    nice python bench/record_grid.py                     # about 30-45 min on a busy 2-core CPU
    nice python bench/record_grid.py --trials-per-gpu 1  # one trial at a time: slower, cleaner timings

1. Writes the small data set the grid trains on (``studies/data/grid-tiny/``: the first
   ``TRAIN_ROWS``/``EVAL_ROWS`` rows of the demo set), so a trial is mostly training, not waiting.
2. Runs ``python -m sweep run --study studies/grid-tiny.yaml``: the real orchestrator, the grid
   sampler, no pruning, one ``python -m trainer`` subprocess per configuration. Rerunning resumes.
3. Reads every complete trial back (Optuna's storage for the parameters, the trial's own
   ``events.jsonl`` for the eval loss and the time at each eval point) and writes one JSON object per
   configuration to ``bench/data/tiny_grid.jsonl`` (see :mod:`sweep.replay` for the fields).

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

STUDY = ROOT / "studies" / "grid-tiny.yaml"
DEMO = ROOT / "studies" / "data" / "demo"
SUBSET = ROOT / "studies" / "data" / "grid-tiny"
TRAIN_ROWS, EVAL_ROWS = 160, 32


def write_subset() -> None:
    """The first rows of the demo set (byte for byte), so the grid's data is fixed and small."""
    SUBSET.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.jsonl", TRAIN_ROWS), ("eval.jsonl", EVAL_ROWS)):
        lines = (DEMO / name).read_text(encoding="utf-8").splitlines(keepends=True)[:rows]
        (SUBSET / name).write_text("".join(lines), encoding="utf-8")


def run_grid(runs_dir: Path, trials_per_gpu: int) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "sweep", "run", "--study", str(STUDY), "--runs-dir", str(runs_dir),
               "--trials-per-gpu", str(trials_per_gpu)]
    return subprocess.call(command, cwd=ROOT, env=env)


def curve_record(trial) -> dict | None:
    """One complete trial as a row of the table, or None if its events are missing."""
    from trainer.events import Evaluation, Result, Setup, Started, read_all

    events = read_all(Path(trial.user_attrs["trial_dir"]) / "events.jsonl")
    started = next((e for e in events if isinstance(e, Started)), None)
    setup = next((e for e in events if isinstance(e, Setup)), None)
    result = next((e for e in events if isinstance(e, Result)), None)
    if started is None or setup is None or result is None or result.status != "ok":
        return None
    # a resumed trial has two runs' events; the table wants one uninterrupted run
    if setup.resumed_from_step:
        return None
    points = [{"point": e.point, "step": e.step, "eval_loss": e.eval_loss, "seconds": round(e.time - started.time, 3)}
              for e in events if isinstance(e, Evaluation) and e.point is not None]
    return {
        "params": {**trial.params, "lora_alpha": trial.user_attrs["lora_alpha"],
                   "use_rslora": trial.user_attrs["use_rslora"]},
        "total_steps": setup.total_steps,
        "setup_seconds": round(setup.time - started.time, 3),
        "points": points,
        "eval_loss": result.eval_loss,
        "seconds": trial.user_attrs["wall_seconds"],
        "trial": trial.number,
    }


def export(runs_dir: Path, out: Path) -> tuple[int, int]:
    """Write the table; returns (rows written, grid size)."""
    import optuna

    from sweep.samplers import grid_size
    from sweep.storage import default_storage_url
    from sweep.study_file import load_study

    study = load_study(str(STUDY))
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
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs", help="where the grid study runs")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "data" / "tiny_grid.jsonl")
    parser.add_argument("--trials-per-gpu", type=int, default=2, help="trials at once (CPU slots)")
    parser.add_argument("--export-only", action="store_true", help="only write the table from a finished run")
    args = parser.parse_args()
    write_subset()
    if not args.export_only:
        code = run_grid(args.runs_dir, args.trials_per_gpu)
        if code != 0:
            print(f"sweep run exited with {code}; rerun to resume", file=sys.stderr)
    written, size = export(args.runs_dir, args.out)
    print(f"{args.out}: {written} of {size} grid configurations")
    return 0 if written == size else 1


if __name__ == "__main__":
    sys.exit(main())
