"""Exporting a trial's adapter: choosing the trial, checking the destination, copying, merging.

Everything is written into a hidden staging folder beside the destination and renamed into place
only when complete, so a failure (a bad merge, Ctrl-C) leaves nothing half-written. The merge runs
in a ``python -m trainer.merge`` subprocess: it needs torch, which the orchestrator never imports.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from sweep.checks.writable import unwritable_reason
from sweep.errors import UserError
from sweep.launch.trainer_process import child_env
from sweep.results.model_card import Standing, adapter_card, merged_card
from sweep.schema.objectives import Objectives, front
from sweep.study.trial_attrs import ADAPTER_PATH
from trainer.spec import TrialSpec
from trainer.trial_folder import ADAPTER_SPEC_FILE, adapter_complete

MERGED_DIR = "merged"
CARD = "README.md"


def choose_trial(optuna_study, study_name: str, number: int | None):
    """Trial ``number`` (default: the best), which must be COMPLETE; else a UserError naming the choices.

    A multi-objective study has no one best trial: without ``number`` it is a UserError naming the
    trials of its Pareto front.
    """
    from optuna.trial import TrialState

    trials = optuna_study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    choices = ", ".join(f"#{t.number}" for t in complete) or "none yet"
    if number is None:
        if not complete:
            raise UserError(f"study {study_name} has no complete trial yet: nothing to export")
        best = front(optuna_study)
        if len(optuna_study.directions) > 1:
            raise UserError(f"study {study_name} is multi-objective: no one trial is best; choose one of its Pareto "
                            f"front with --trial N ({', '.join(f'#{t.number}' for t in best)}; "
                            f"`python -m sweep best --study {study_name}` shows them)")
        return best[0]
    chosen = next((t for t in trials if t.number == number), None)
    if chosen is None:
        raise UserError(f"--trial {number}: study {study_name} has no such trial (complete trials: {choices})")
    if chosen.state != TrialState.COMPLETE:
        raise UserError(f"--trial {number}: trial #{number} of study {study_name} is {chosen.state.name}, not COMPLETE; "
                        f"only complete trials have a final adapter (complete trials: {choices})")
    return chosen


def standing(optuna_study) -> Standing:
    """Where the study's trials stand, for the model card: the best trial or the Pareto front, out of how many."""
    from optuna.trial import TrialState

    return Standing(best=[t.number for t in front(optuna_study)], objectives=Objectives.of_study(optuna_study),
                    n_complete=len(optuna_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))))


def trial_adapter(trial) -> Path:
    """The trial's adapter folder, which must still be on disk."""
    path = trial.user_attrs.get(ADAPTER_PATH)
    if not path or not adapter_complete(path):
        raise UserError(f"trial #{trial.number}: its adapter folder {path} is missing or incomplete "
                        "(was the runs folder moved or cleaned?)")
    return Path(path)


def check_destination(to: Path) -> None:
    """``--to`` must be a new folder or an empty one, in a place that can be written."""
    if to.exists() and not to.is_dir():
        raise UserError(f"--to {to}: is a file; give a new or empty folder")
    if to.is_dir() and any(to.iterdir()):
        raise UserError(f"--to {to}: exists and is not empty; give a new or empty folder")
    problem = unwritable_reason(to.parent)  # the export is staged beside DIR, then renamed into place
    if problem:
        raise UserError(f"--to {to}: {problem}; give a new or empty folder in a writable place")


def export_trial(trial, adapter: Path, to: Path, study_name: str, standing: Standing, merge_dtype: str | None) -> Path:
    """Copy ``adapter`` with a model card to ``to``; with ``merge_dtype``, also a merged model in ``to/merged``."""
    spec = TrialSpec.read(adapter / ADAPTER_SPEC_FILE)
    to = to.resolve()
    to.parent.mkdir(parents=True, exist_ok=True)
    staging = to.parent / f".{to.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        # PEFT's placeholder README is replaced by the card below
        shutil.copytree(adapter, staging, ignore=shutil.ignore_patterns(CARD))
        (staging / CARD).write_text(adapter_card(spec, trial, study_name, standing), encoding="utf-8")
        if merge_dtype is not None:
            merged = staging / MERGED_DIR
            written_dtype = run_merge(adapter, merged, merge_dtype)
            (merged / CARD).write_text(merged_card(spec, trial, study_name, standing, written_dtype),
                                       encoding="utf-8")
        if to.is_dir():
            to.rmdir()  # checked empty before; os.replace needs it gone or empty
        os.replace(staging, to)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return to


def run_merge(adapter: Path, out: Path, dtype: str) -> str:
    """Merge in a ``python -m trainer.merge`` subprocess; returns the dtype the merged weights were saved in."""
    command = [sys.executable, "-m", "trainer.merge", str(adapter), str(out), "--dtype", dtype]
    done = subprocess.run(command, capture_output=True, text=True, env=child_env({}), stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        lines = [line.strip() for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        last = lines[-1].removeprefix("error: ") if lines else "no output"
        raise UserError(f"merging the adapter failed (exit {done.returncode}): {last}")
    return saved_dtype(out)


def saved_dtype(model_dir: Path) -> str:
    """The dtype a saved model's config declares (``dtype``, or ``torch_dtype`` in older configs)."""
    import json

    config = json.loads((model_dir / "config.json").read_text())
    return str(config.get("dtype") or config.get("torch_dtype") or "unknown")
