"""Experiment trackers of one trial (``training.report_to``): one run per trial, grouped by study.

Every tracker transformers integrates gets the run name ``STUDY/trial-N`` (``SFTConfig.run_name``).
Three are set up here so that a study's runs sit together and carry the sampled parameters:

- ``tensorboard``: event files in ``runs/NAME/tensorboard/trial-N``, so ``tensorboard --logdir
  runs/NAME/tensorboard`` lists the trials side by side; the sampled parameters are written as
  TensorBoard hparams with ``eval/loss`` as their metric (the HPARAMS tab compares the trials).
- ``mlflow``: a run in the experiment named after the study (``MLFLOW_EXPERIMENT_NAME`` overrides) of
  ``MLFLOW_TRACKING_URI``, by default the local store ``sqlite:///runs/NAME/mlflow.db`` (MLflow's
  ``./mlruns`` file store is in maintenance mode and refuses to open by default since MLflow 3.7).
  Tags ``study``, ``trial`` and one per sampled parameter; the parameters also as params ``sweep/NAME``.
- ``wandb``: a run in project ``WANDB_PROJECT`` (default: the study name), group ``WANDB_RUN_GROUP``
  (default: the study name), tagged with the study; the sampled parameters are the run's config, as
  W&B Sweeps records them. Local files in ``runs/NAME/wandb`` (W&B's ``wandb/`` folder in ``WANDB_DIR``,
  which defaults to ``runs/NAME``).
  ``WANDB_MODE=offline`` works without an account (``wandb sync`` uploads later).

The trial's runs are started before training (:func:`start`) so that transformers' callbacks log
into them, and ended by :func:`finish` once the trial's outcome is known: a warm worker runs many
trials in one process, and W&B's and MLflow's active run would otherwise carry over to the next.
"""

from __future__ import annotations

import fcntl
import os
import sys
import traceback
from pathlib import Path

from trainer.spec import TrialSpec

TENSORBOARD_DIR = "tensorboard"
MLFLOW_DB = "mlflow.db"
MLFLOW_STATUS = {"ok": "FINISHED", "stopped": "KILLED"}  # any other outcome: FAILED
_restore_env: dict[str, str | None] = {}


def run_name(spec: TrialSpec) -> str:
    """The trial's run name in every tracker: ``STUDY/trial-N``."""
    return f"{spec.study}/trial-{spec.trial_number}"


def study_dir(spec: TrialSpec) -> Path:
    return Path(spec.study_dir or spec.output_dir)


def tensorboard_dir(spec: TrialSpec) -> Path:
    """Where the trial's TensorBoard event files go."""
    return study_dir(spec) / TENSORBOARD_DIR / f"trial-{spec.trial_number}"


def start(spec: TrialSpec) -> None:
    """Start the trial's runs, before its trainer is built (call :func:`finish` after it, whatever happens)."""
    report_to = spec.training.report_to
    if "tensorboard" in report_to:
        # transformers' TensorBoardCallback reads it when the trainer is built; finish() puts the old value back
        _set_env("TENSORBOARD_LOGGING_DIR", str(tensorboard_dir(spec)))
        _write_hparams(spec)
    if "mlflow" in report_to:
        _start_mlflow(spec)
    if "wandb" in report_to:
        _start_wandb(spec)


def finish(status: str) -> None:
    """End the runs :func:`start` began with the trial's outcome (``Result.status``); safe to call always.

    A tracker that cannot close its run (a server gone away) costs the run's last records, not the trial.
    """
    try:
        if "mlflow" in sys.modules:
            import mlflow

            if mlflow.active_run() is not None:
                mlflow.end_run(status=MLFLOW_STATUS.get(status, "FAILED"))
        if "wandb" in sys.modules:
            import wandb

            if wandb.run is not None:
                wandb.finish(exit_code=0 if status in MLFLOW_STATUS else 1)
    except Exception:
        traceback.print_exc()
    for name, value in _restore_env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    _restore_env.clear()


def _set_env(name: str, value: str) -> None:
    _restore_env.setdefault(name, os.environ.get(name))
    os.environ[name] = value


def _write_hparams(spec: TrialSpec) -> None:
    """The sampled parameters as TensorBoard hparams of the trial's run, with eval/loss as their metric."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    values = {**spec.params, "study": spec.study, "trial": spec.trial_number}
    writer = SummaryWriter(log_dir=str(tensorboard_dir(spec)))
    for summary in hparams(values, {"eval/loss": None}):
        writer.file_writer.add_summary(summary)
    writer.close()


def _start_mlflow(spec: TrialSpec) -> None:
    import mlflow

    folder = study_dir(spec)
    folder.mkdir(parents=True, exist_ok=True)
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{folder / MLFLOW_DB}"
    experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or spec.study
    tags = {"study": spec.study, "trial": str(spec.trial_number), **{k: str(v) for k, v in spec.params.items()}}
    # trials starting at once would each create the database's tables, or the experiment, and all but one fail
    with open(folder / ".mlflow.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(experiment)
        mlflow.start_run(run_name=run_name(spec), tags=tags)
    mlflow.log_params({f"sweep/{k}": v for k, v in spec.params.items()})


def _start_wandb(spec: TrialSpec) -> None:
    import wandb

    folder = Path(os.environ.get("WANDB_DIR") or study_dir(spec))  # W&B writes into its wandb/ folder
    folder.mkdir(parents=True, exist_ok=True)
    wandb.init(project=os.environ.get("WANDB_PROJECT") or spec.study, group=os.environ.get("WANDB_RUN_GROUP") or spec.study,
               name=run_name(spec), tags=[spec.study], dir=str(folder),
               config={**spec.params, "study": spec.study, "trial": spec.trial_number})
