"""Running (or resuming) a study until it has ``n_trials`` finished trials; see ``sweep.commands.run``.

Every check of the user's input (the study file, its model and data, ``--gpus``, ``--trials-per-gpu``,
the runs folder, the study database file, the rows against the tokenizer) comes before the study is
opened, so a mistake creates and changes nothing. Several workers may
run this on one study at once (threads of one process, processes of one host, hosts sharing a
PostgreSQL storage): :class:`~sweep.run.trial_loop.TrialLoop` keeps the total exact between them.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings

from optuna.exceptions import ExperimentalWarning
from optuna.trial import TrialState

from sweep.checks.preflight import check_data, check_writable
from sweep.checks.token_check import check_rows_fit
from sweep.checks.trackers import check_trackers
from sweep.launch.gpu_slots import SlotPool
from sweep.launch.gpus import plan_capacity
from sweep.launch.group_workers import handed_over
from sweep.launch.memory_estimate import estimate_trial_gib
from sweep.launch.trainer_process import cpu_threads_env
from sweep.run.base_model import BaseMeasurement
from sweep.run.grid_gaps import fill_grid_gaps
from sweep.run.objective import Objective
from sweep.run.progress import ProgressView
from sweep.run.stop_signals import stopping_with
from sweep.run.trial_loop import FINISHED, TrialLoop
from sweep.schema.objectives import Objectives
from sweep.schema.pruners import build_pruner
from sweep.schema.samplers import build_sampler
from sweep.schema.study_file import Study, load_study
from sweep.study.locate import storage_name, storage_url
from sweep.study.optuna_internals import set_metric_names, storage_of
from sweep.study.optuna_internals import study_id as study_id_of
from sweep.study.storage import check_database_file, default_storage_url, open_study, study_dir
from sweep.study.study_gate import StudyGate
from sweep.study.study_versions import RUNS_STARTED, identity, newest_version, settle, version_uids
from sweep.study.time_budget import time_budget
from sweep.study.trial_attrs import CONFIG, STUDY_FILE, TRIAL_DIR
from sweep.study.trial_folders import foreign_folders, refuse_foreign, start_over, study_exists, trial_folders
from sweep.study.warm_start import check_source, copied_count, warm_start

# heartbeats and TPE's `group` are stable in use; Optuna still labels them experimental
warnings.filterwarnings("ignore", category=ExperimentalWarning)
# the trial loop records heartbeats itself (Optuna assumes only study.optimize does)
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


def run_study(args) -> int:
    """Run the study named by ``args.study``; returns the exit code."""
    study = load_study(args.study)
    check_data(study)
    check_trackers(study)
    execution, search = study.config.execution, study.config.search
    grouped = execution.backend == "grouped"
    capacity = plan_capacity(args.gpus, args.trials_per_gpu, lambda: estimate_trial_gib(study),
                             grouped=grouped)  # trials training at once on each device
    folder = study_dir(args.runs_dir, study.name)
    url = storage_url(args, study)
    if args.fresh:
        aside = start_over(folder, url, study.name, default_storage_url(args.runs_dir, study.name))
        if aside is not None:
            print(f"moved the earlier runs of {study.name} aside to {aside}", flush=True)
    check_writable(folder, url, args.runs_dir, storage_given=bool(args.storage))
    label = storage_name(args, study)
    check_database_file(url, label)
    record_rows_check = check_rows_fit(study, folder)
    check_source(study, args.runs_dir, args.storage)
    if not study_exists(url, study.name):  # every trial folder there is another study's
        refuse_foreign(study.path, study.name, folder, trial_folders(folder), label)
    os.environ.update(cpu_threads_env(sum(capacity.values())))  # trainers inherit it
    pruner, heartbeat = build_pruner(search.pruner), (execution.heartbeat_seconds, execution.stale_after_seconds)
    objectives = Objectives(tuple(search.objective))
    optuna_study = open_study(url, study.name, pruner=pruner, create=True, heartbeat=heartbeat, label=label,
                              directions=objectives.directions, metric_names=objectives.labels)
    record_rows_check()
    gate = StudyGate(optuna_study, url, folder)
    with gate:
        optuna_study = newest_version(optuna_study, lambda name: open_study(
            url, name, pruner=pruner, create=False, heartbeat=heartbeat, label=label))
        optuna_study = settle(optuna_study, study, pruner)
        ident = identity(optuna_study)
        warm_start(optuna_study, study, args.runs_dir, args.storage)
        _check_trial_folders(optuna_study, study, folder, label)
        run_index = _join(optuna_study)
        _record_study_file(optuna_study, study, folder)
        for entry in search.enqueue:
            optuna_study.enqueue_trial(search.params.to_optuna_params(entry), skip_if_exists=True)
        optuna_study.sampler = build_sampler(search.sampler, search.params, run_index)
        finished = _count(optuna_study, FINISHED)
        if args.n_trials is not None:  # --n-trials: this run's total instead of the file's (see sweep.commands.run)
            count, more = args.n_trials
            search.n_trials = finished + count if more else count + copied_count(optuna_study)
        else:
            search.n_trials += copied_count(optuna_study)  # a warm start's copies are not this study's own trials
        if search.sampler.name == "grid":
            search.n_trials, gaps = fill_grid_gaps(optuna_study, optuna_study.sampler, search.n_trials)
            if gaps:
                print(f"grid: {len(gaps)} points no trial has run queued again", flush=True)
    if finished >= search.n_trials:
        print(f"study {study.name} already has {finished} finished trials (n_trials: {search.n_trials}); nothing to do")
        return 0
    budget = time_budget(optuna_study, search.timeout_hours)
    if budget.spent():
        print(f"study {study.name}: {budget.describe()}; nothing to do (raise it to go on)")
        return 0
    counts = {s.name: _count(optuna_study, (s,)) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    print(f"study {optuna_study.study_name}: storage {url}", flush=True)
    print(f"trial folders: {folder / 'trials'}", flush=True)
    stopping = threading.Event()
    with ProgressView(study.name, search.n_trials, counts, _best_value(optuna_study, objectives),
                      objectives=objectives) as progress:
        pool = SlotPool(handed_over(capacity) if grouped else capacity, stopping)  # a group's next trials wait in it
        objective = Objective(study, folder, progress, pool, stopping, ident, at_once=capacity)
        loop = TrialLoop(optuna_study, objective, gate, n_trials=search.n_trials, threads=pool.size,
                         heartbeat_seconds=execution.heartbeat_seconds,
                         stale_after_seconds=execution.stale_after_seconds, max_retries=execution.max_retries,
                         max_consecutive_failures=execution.max_consecutive_failures, budget=budget)
        base = BaseMeasurement(optuna_study, study, folder, ident.uid, _device_env(capacity), stopping)
        with stopping_with(lambda: _stop(objective)):
            try:
                base.start()
                for device, k in capacity.items():
                    for _ in range(min(k, search.n_trials - finished)):
                        objective.launcher.prewarm(device)
                loop.run()
            finally:
                objective.close()
                base.close()
    if stopping.is_set():
        print(f"interrupted: run `python -m sweep run --study {args.study}` to resume", file=sys.stderr)
        return 130
    print(f"study {study.name}: {_count(optuna_study, FINISHED)} finished trials; {_best_line(optuna_study, objectives)}",
          flush=True)
    if loop.tripped:
        print(f"stopped after {execution.max_consecutive_failures} failed trials in a row; see the trials' "
              f"fail_reason (python -m sweep status --study {args.study})", file=sys.stderr)
        return 1
    return 0


def _device_env(capacity: dict) -> dict[str, str]:
    """Where the base model is measured: the first device trials run on (the CPU where none)."""
    device = next(iter(capacity))
    return {} if device is None else {"CUDA_VISIBLE_DEVICES": str(device)}


def _check_trial_folders(optuna_study, study: Study, folder, url: str) -> None:
    """Refuse trial folders that belong to no version of this study (a replaced database); call inside the gate."""
    folders = trial_folders(folder)
    if not folders:
        return
    storage = storage_of(optuna_study)
    known = {t.user_attrs.get(TRIAL_DIR) for t in optuna_study.get_trials(deepcopy=False)}
    if optuna_study.study_name != study.name:  # folders made before study ids are the first version's
        known |= {t.user_attrs.get(TRIAL_DIR) for t in storage.get_all_trials(storage.get_study_id_from_name(study.name),
                                                                                  deepcopy=False)}
    refuse_foreign(study.path, study.name, folder, foreign_folders(folders, version_uids(storage, study.name), known),
                   url)


def _join(optuna_study) -> int:
    """This run's index among all runs of the study (0 for the first); call inside the gate."""
    storage, study_id = storage_of(optuna_study), study_id_of(optuna_study)
    index = storage.get_study_system_attrs(study_id).get(RUNS_STARTED, 0)
    storage.set_study_system_attr(study_id, RUNS_STARTED, index + 1)
    return index


def _count(optuna_study, states) -> int:
    return len(optuna_study.get_trials(deepcopy=False, states=states))


def _best_value(optuna_study, objectives: Objectives) -> float | None:
    """The best value so far of a single-metric study (None before a trial completes, and for several metrics)."""
    best = None
    if not objectives.multi:
        for trial in optuna_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            best = trial.value if objectives.better(trial.value, best) else best
    return best


def _best_line(optuna_study, objectives: Objectives) -> str:
    """``best eval_loss 2.5012``, or the size of the Pareto front of a multi-objective study."""
    if objectives.multi:
        front = optuna_study.best_trials
        return f"Pareto front of {objectives.describe()}: {len(front)} trials (sweep best lists them)"
    return f"best {objectives.labels[0]} {_best_value(optuna_study, objectives)}"


def _record_study_file(optuna_study, study: Study, folder) -> None:
    """Keep the resolved study file beside the trials and on the study, so the dashboard shows it, and name
    the study's metrics (optuna-dashboard's axis titles)."""
    labels = Objectives(tuple(study.config.search.objective)).labels
    if optuna_study.metric_names != labels:
        set_metric_names(optuna_study, labels)
    folder.mkdir(parents=True, exist_ok=True)
    resolved = study.config.model_dump_json(indent=2)
    (folder / "study.resolved.json").write_text(resolved + "\n")
    optuna_study.set_user_attr(STUDY_FILE, str(study.path))
    optuna_study.set_user_attr(CONFIG, study.config.model_dump(mode="json"))


def _stop(objective: Objective) -> None:
    """The first Ctrl-C/SIGTERM: stop the trainers and record their trials as interrupted (see sweep.run.stop_signals)."""
    print("\nstopping: ending running trials (Ctrl-C again to exit at once)", file=sys.stderr, flush=True)
    objective.interrupt()
