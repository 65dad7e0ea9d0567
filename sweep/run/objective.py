"""The Optuna objective: sample a configuration, run it in a trainer, record what came back.

Each call samples the trial's values, records them, builds the trial's
:class:`trainer.spec.TrialSpec`, writes it to the trial's folder and has a launcher start a trainer
on it (:mod:`sweep.launch.trainer_launch`: a fresh process or a warm worker, the objective does not ask
which). :mod:`sweep.run.trial_watch` follows the trainer's events to its end; :mod:`sweep.run.trial_outcome`
turns its result into the trial's value, ``TrialPruned`` or a FAIL with a ``fail_reason``. A
configuration that already ran is not trained again (:mod:`sweep.run.repeats`).

Out of memory is met in two steps before the trial gives up: a trial that shared its device is
placed again with the device to itself (same settings, from its checkpoint); a trial alone on its
device runs again with half the micro-batch and twice the gradient accumulation (from scratch).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
from pathlib import Path

import optuna

from sweep.launch.gpu_slots import Lease, PoolStopped, SlotPool
from sweep.launch.trainer_launch import launcher_for
from sweep.results.trial_artifacts import artifact_store, attach_trial_files
from sweep.run.progress import ProgressView
from sweep.run.repeats import earlier_trial, outcome_of, repeat_outcome
from sweep.run.trial_outcome import Interrupted, conclude, interrupted
from sweep.run.trial_watch import follow
from sweep.schema.objectives import Objectives
from sweep.schema.study_file import Study
from sweep.study import trial_attrs as attrs
from sweep.study.study_versions import Identity
from trainer.events import Result
from trainer.spec import TrialSpec
from trainer.trial_folder import CHECKPOINT_DIR, EVENTS_FILE, SPEC_FILE, STOP_FILE

WORKER = f"{socket.gethostname()}:{os.getpid()}"  # which orchestrator ran a trial


class Objective:
    """Callable for the trial loop; thread-safe, each running trial holds a lease from ``pool``; ``at_once``: the
    trials a group worker trains at once on each device (a grouped study's pool places more)."""

    def __init__(self, study: Study, folder: Path, progress: ProgressView, pool: SlotPool,
                 stopping: threading.Event, identity: Identity, at_once: dict[str | None, int] | None = None) -> None:
        self.study = study
        self.identity = identity
        self.folder = folder
        self.progress = progress
        self.pool = pool
        self.stopping = stopping
        self.launcher = launcher_for(study.config, folder / "workers", stopping, at_once)
        self.artifacts = artifact_store(folder)
        self.objectives = Objectives(tuple(study.config.search.objective))

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        values = self.study.config.search.params.sample(trial)
        trial.set_user_attr(attrs.LORA_ALPHA, values["lora_alpha"])
        trial.set_user_attr(attrs.USE_RSLORA, values["use_rslora"])
        trial.set_user_attr(attrs.KEEP_ADAPTER, self.objectives.keep_adapter)
        trial.set_user_attr(attrs.WORKER, WORKER)
        earlier = earlier_trial(trial)
        if earlier is not None:  # the same seeded run already ran: training it again would only repeat it
            self.progress.trial_finished(trial.number, earlier.state.name, outcome_of(earlier),
                                         f"same as trial {earlier.number}, not trained again")
            return repeat_outcome(trial, earlier)
        trial_dir = self.trial_dir(trial)
        trial.set_user_attr(attrs.TRIAL_DIR, str(trial_dir))
        spec = self.build_spec(trial, values, trial_dir)
        try:
            return self._run_placed(trial, spec)
        except Interrupted:
            self.progress.trial_interrupted(trial.number)
            raise

    def trial_dir(self, trial: optuna.Trial) -> Path:
        """The trial's folder; a retry of an interrupted trial reuses the original's, to resume its checkpoint."""
        number = trial.user_attrs.get(attrs.RETRY_OF, trial.number)
        path = self.folder / "trials" / f"{self.identity.trial_prefix}{number:05d}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def build_spec(self, trial: optuna.Trial, values: dict, trial_dir: Path) -> TrialSpec:
        c = self.study.config
        lora, training = c.space.sections(values)
        return TrialSpec(
            study=self.study.name, trial_number=trial.number, params=values, model=c.model, data=c.data,
            lora=lora, training=training, samples=c.samples, output_dir=str(trial_dir), backend=c.execution.backend,
            cache_dir=str(self.folder / "cache"), study_dir=str(self.folder), study_uid=self.identity.uid,
            keep_checkpoints=c.execution.keep_checkpoints, keep_adapter=self.objectives.keep_adapter,
        )

    def _run_placed(self, trial: optuna.Trial, spec: TrialSpec) -> float | list[float]:
        """Run the trial on a leased device, placing it again or shrinking its micro-batch on OOM."""
        lease = self._acquire(trial, exclusive=False)
        placements, halved = [], False
        try:
            while True:
                placements.append(lease.describe())
                trial.set_user_attr(attrs.PLACEMENTS, placements)
                result = self._run_once(trial, spec, lease)
                if result.status != "oom":
                    break
                t = spec.training
                if lease.shared and not lease.exclusive:
                    trial.set_user_attr(attrs.OOM_REPLACED, f"out of memory beside other trials on device {lease.device}: "
                                                        "placed again with a device to itself")
                    self.pool.release(lease)
                    lease = None
                    lease = self._acquire(trial, exclusive=True)
                elif not halved and t.per_device_train_batch_size > 1:
                    half = t.per_device_train_batch_size // 2
                    trial.set_user_attr(attrs.OOM_RETRY, f"micro-batch {t.per_device_train_batch_size} -> {half}, "
                                                     f"gradient accumulation {t.gradient_accumulation_steps} -> "
                                                     f"{t.gradient_accumulation_steps * 2}")
                    spec.training = t.model_copy(update={"per_device_train_batch_size": half,
                                                         "gradient_accumulation_steps": t.gradient_accumulation_steps * 2})
                    spec.resume, halved = False, True
                    shutil.rmtree(spec.out / CHECKPOINT_DIR, ignore_errors=True)
                else:
                    break
        finally:
            if lease is not None:
                self.pool.release(lease)
        attach_trial_files(trial, spec.out, result.samples, self.artifacts)
        return conclude(trial, result, self.progress, self.study.path, self.objectives)

    def _acquire(self, trial: optuna.Trial, exclusive: bool) -> Lease:
        try:
            return self.pool.acquire(exclusive=exclusive)
        except PoolStopped:
            raise interrupted(trial) from None

    def _run_once(self, trial: optuna.Trial, spec: TrialSpec, lease: Lease) -> Result:
        spec_path = spec.out / SPEC_FILE
        spec.write(spec_path)
        for stale in (STOP_FILE, EVENTS_FILE):
            (spec.out / stale).unlink(missing_ok=True)
        handle = self.launcher.start_trial(spec.out, spec_path, lease.env())
        trial.set_user_attr(attrs.LOG_PATH, str(handle.log_path))
        self.progress.trial_started(trial.number, spec.params, waiting=handle.waits_to_join)
        try:
            return follow(trial, handle, self.progress, self.stopping, self.study.config.execution.timeout_minutes)
        finally:
            self.launcher.finished(handle)

    def close(self) -> None:
        """End what the launcher keeps between trials (running trials end with their threads)."""
        self.launcher.close()

    def interrupt(self) -> None:
        """Stop the run: each running trial's thread ends its trainer and records it as interrupted."""
        self.stopping.set()
        self.pool.wake()
