"""Running (or resuming) a study until it has ``n_trials`` finished trials; see ``sweep.commands.run``."""

from __future__ import annotations

import os
import signal
import sys
import warnings

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.trial import TrialState

from sweep.errors import UserError
from sweep.objective import RETRY_OF, Objective, TrialFailed
from sweep.preflight import check_data
from sweep.progress import ProgressView
from sweep.pruners import build_pruner
from sweep.samplers import build_sampler
from sweep.storage import open_study, study_dir
from sweep.study_file import Study, load_study
from sweep.study_runs import storage_url

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# heartbeats, the retry callback and TPE's `group` are stable in use; Optuna still labels them experimental
warnings.filterwarnings("ignore", category=ExperimentalWarning)


def run_study(args) -> int:
    """Run the study named by ``args.study``; returns the exit code."""
    study = load_study(args.study)
    check_data(study)
    slots = _slots(args.gpus, args.trials_per_gpu)
    folder = study_dir(args.runs_dir, study.name)
    url = storage_url(args, study)
    search = study.config.search
    sampler = build_sampler(search.sampler, search.params)
    pruner = build_pruner(search.pruner)
    print(f"study {study.name}: storage {url}", flush=True)
    print(f"trial folders: {folder / 'trials'}", flush=True)
    optuna_study = open_study(url, study.name, folder, sampler, pruner, create=True,
                              max_retries=study.config.execution.max_retries, heartbeat=True)
    _record_study_file(optuna_study, study, folder)
    for entry in search.enqueue:
        optuna_study.enqueue_trial(search.params.to_optuna_params(entry), skip_if_exists=True)
    finished = _count(optuna_study, FINISHED)
    if finished >= search.n_trials:
        print(f"study {study.name} already has {finished} finished trials (n_trials: {search.n_trials}); nothing to do")
        return 0
    counts = {s.name: _count(optuna_study, (s,)) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    best = _best_value(optuna_study)
    with ProgressView(study.name, search.n_trials, counts, best) as progress:
        objective = Objective(study, folder, progress, slots)
        restore = _install_signal_handlers(objective)
        guard = _FailureGuard(study.config.execution.max_consecutive_failures)
        try:
            optuna_study.optimize(
                objective, n_jobs=len(slots), catch=(TrialFailed,), gc_after_trial=False,
                callbacks=[optuna.study.MaxTrialsCallback(search.n_trials, states=FINISHED), guard],
            )
        except KeyboardInterrupt:
            _requeue_interrupted(optuna_study, study.config.execution.max_retries)
            print(f"interrupted: run `python -m sweep run --study {args.study}` to resume", file=sys.stderr)
            return 130
        finally:
            restore()
    print(f"study {study.name}: {_count(optuna_study, FINISHED)} finished trials; best eval_loss "
          f"{_best_value(optuna_study)}", flush=True)
    if guard.tripped:
        print(f"stopped after {guard.limit} failed trials in a row; see the trials' fail_reason "
              f"(python -m sweep status --study {args.study})", file=sys.stderr)
        return 1
    return 0


def _slots(gpus: str | None, per_gpu: str) -> list[str | None]:
    try:
        k = int(per_gpu)
    except ValueError:
        raise UserError(f"--trials-per-gpu: {per_gpu!r} is not allowed: give a whole number of at least 1") from None
    if k < 1:
        raise UserError(f"--trials-per-gpu: {k} is not allowed: give a whole number of at least 1")
    if gpus is None:
        return [None] * k
    indices = [g.strip() for g in gpus.split(",") if g.strip()]
    if not indices or not all(g.isdigit() for g in indices):
        raise UserError(f"--gpus: {gpus!r} is not allowed: give GPU indices like 0,1,2")
    return [g for g in indices for _ in range(k)]


def _count(optuna_study, states) -> int:
    return len(optuna_study.get_trials(deepcopy=False, states=states))


def _best_value(optuna_study) -> float | None:
    complete = optuna_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return min(t.value for t in complete) if complete else None


def _record_study_file(optuna_study, study: Study, folder) -> None:
    """Keep the resolved study file beside the trials and on the study, so the dashboard shows it."""
    folder.mkdir(parents=True, exist_ok=True)
    resolved = study.config.model_dump_json(indent=2)
    (folder / "study.resolved.json").write_text(resolved + "\n")
    optuna_study.set_user_attr("study_file", str(study.path))
    optuna_study.set_user_attr("config", study.config.model_dump(mode="json"))


def _requeue_interrupted(optuna_study, max_retries: int) -> None:
    """Queue the parameters of trials stopped by Ctrl-C again, to resume from their checkpoints."""
    for trial in optuna_study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if trial.user_attrs.get("fail_reason") != "interrupted" or trial.user_attrs.get("requeued"):
            continue
        retries = trial.user_attrs.get("retries", 0)
        optuna_study._storage.set_trial_user_attr(trial._trial_id, "requeued", True)
        if retries < max_retries:
            original = trial.user_attrs.get(RETRY_OF, trial.number)
            optuna_study.enqueue_trial(trial.params, user_attrs={RETRY_OF: original, "retries": retries + 1})


class _FailureGuard:
    """Stops the study after ``limit`` failed trials in a row (a broken setup should not loop forever)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.in_a_row, self.tripped = limit, 0, False

    def __call__(self, optuna_study, trial) -> None:
        self.in_a_row = self.in_a_row + 1 if trial.state == TrialState.FAIL else 0
        if self.in_a_row >= self.limit:
            self.tripped = True
            optuna_study.stop()


def _install_signal_handlers(objective: Objective):
    """First Ctrl-C/SIGTERM: stop the trainers and record their trials as interrupted; second: exit now."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, frame):
        if objective.stopping.is_set():
            os._exit(130)
        print("\nstopping: ending running trials (Ctrl-C again to exit at once)", file=sys.stderr, flush=True)
        objective.interrupt()

    for sig in previous:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore
