"""The Optuna objective: sample a configuration, run it in a trainer subprocess, record what came back.

Each call builds the trial's :class:`trainer.spec.TrialSpec`, writes it to the trial's folder, starts
``python -m trainer`` on it and follows its events: eval losses are reported to Optuna (which may
prune), progress goes to the live view. The trial's value is the final eval loss; everything else
the trainer measured is stored as user attributes. Failures become FAIL trials with a
``fail_reason`` (``oom``, ``timeout``, ``crash: <last error line>``; details in ``fail_detail``)
and the study goes on.

Out of memory is met in two steps before the trial gives up: a trial that shared its device is
placed again with the device to itself (same settings, from its checkpoint); a trial alone on its
device runs again with half the micro-batch and twice the gradient accumulation (from scratch).
A trial is COMPLETE only once its adapter folder holds a full adapter.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

import optuna

from sweep import trial_attrs as attrs
from sweep.errors import UserError
from sweep.eval_reporter import EvalReporter
from sweep.gpu_slots import Lease, PoolStopped, SlotPool
from sweep.progress import ProgressView
from sweep.repeats import earlier_trial, repeat_outcome
from sweep.study_file import Study
from sweep.study_versions import Identity
from sweep.trainer_process import TrainerProcess
from sweep.trial_artifacts import artifact_store, attach_trial_files
from sweep.warm_trainers import WarmTrainerPool
from trainer.events import Evaluation, Progress, Result, Setup
from trainer.spec import LoraSpec, TrainingSpec, TrialSpec
from trainer.trial_folder import CHECKPOINT_DIR, EVENTS_FILE, SPEC_FILE, STOP_FILE, adapter_complete

POLL_SECONDS = 0.2
PRUNE_GRACE_SECONDS = 60
INTERRUPT_GRACE_SECONDS = 2.0  # SIGTERM, then SIGKILL: Ctrl-C must end the run within a few seconds
WORKER = f"{socket.gethostname()}:{os.getpid()}"  # which orchestrator ran a trial


class TrialFailed(Exception):
    """A trial ended without a result; the message is its ``fail_reason``."""


class Interrupted(KeyboardInterrupt):
    """The orchestrator was asked to stop (Ctrl-C or SIGTERM) while this trial ran."""


class Objective:
    """Callable for the trial loop; thread-safe, each running trial holds a lease from ``pool``."""

    def __init__(self, study: Study, folder: Path, progress: ProgressView, pool: SlotPool,
                 stopping: threading.Event, identity: Identity) -> None:
        self.study = study
        self.identity = identity
        self.folder = folder
        self.progress = progress
        self.pool = pool
        self.stopping = stopping
        execution = study.config.execution
        self.warm = WarmTrainerPool(folder / "workers", execution.backend, execution.worker_max_trials,
                                    execution.worker_max_leak_mb, stopping) if execution.warm_workers else None
        self.artifacts = artifact_store(folder)

    def __call__(self, trial: optuna.Trial) -> float:
        values = self.study.config.search.params.sample(trial)
        trial.set_user_attr(attrs.LORA_ALPHA, values["lora_alpha"])
        trial.set_user_attr(attrs.USE_RSLORA, values["use_rslora"])
        trial.set_user_attr(attrs.WORKER, WORKER)
        earlier = earlier_trial(trial)
        if earlier is not None:  # the same seeded run already ran: training it again would only repeat it
            self.progress.trial_finished(trial.number, earlier.state.name, earlier.value,
                                         f"same as trial {earlier.number}, not trained again")
            return repeat_outcome(trial, earlier)
        trial_dir = self.trial_dir(trial)
        trial.set_user_attr(attrs.TRIAL_DIR, str(trial_dir))
        spec = self.build_spec(trial, values, trial_dir)
        return self._run_placed(trial, spec)

    def trial_dir(self, trial: optuna.Trial) -> Path:
        """The trial's folder; a retry of an interrupted trial reuses the original's, to resume its checkpoint."""
        number = trial.user_attrs.get(attrs.RETRY_OF, trial.number)
        path = self.folder / "trials" / f"{self.identity.trial_prefix}{number:05d}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def build_spec(self, trial: optuna.Trial, values: dict, trial_dir: Path) -> TrialSpec:
        c = self.study.config
        return TrialSpec(
            study=self.study.name, trial_number=trial.number, params=values, model=c.model, data=c.data,
            lora=LoraSpec(**c.lora.model_dump(), r=values["r"], lora_alpha=values["lora_alpha"],
                          use_rslora=values["use_rslora"]),
            training=TrainingSpec(**c.training.model_dump(), learning_rate=values["learning_rate"],
                                  num_train_epochs=values["num_train_epochs"]),
            samples=c.samples, output_dir=str(trial_dir), backend=c.execution.backend,
            cache_dir=str(self.folder / "cache"), study_uid=self.identity.uid,
            keep_checkpoints=c.execution.keep_checkpoints,
        )

    def _run_placed(self, trial: optuna.Trial, spec: TrialSpec) -> float:
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
        return self._conclude(trial, result)

    def _acquire(self, trial: optuna.Trial, exclusive: bool) -> Lease:
        try:
            return self.pool.acquire(exclusive=exclusive)
        except PoolStopped:
            trial.set_user_attr(attrs.FAIL_REASON, attrs.INTERRUPTED)
            raise Interrupted() from None

    def _run_once(self, trial: optuna.Trial, spec: TrialSpec, lease: Lease) -> Result:
        spec_path = spec.out / SPEC_FILE
        spec.write(spec_path)
        for stale in (STOP_FILE, EVENTS_FILE):
            (spec.out / stale).unlink(missing_ok=True)
        if self.warm is not None:
            process = self.warm.start_trial(spec.out, spec_path, lease.env())
        else:
            process = TrainerProcess(spec.out, spec_path, lease.env())
        trial.set_user_attr(attrs.LOG_PATH, str(process.log_path))
        self.progress.trial_started(trial.number, spec.params)
        try:
            return self._follow(trial, spec, process)
        finally:
            if self.warm is not None:
                self.warm.finished(process)

    def _follow(self, trial: optuna.Trial, spec: TrialSpec, process: TrainerProcess) -> Result:
        timeout = self.study.config.execution.timeout_minutes
        reporter = EvalReporter(trial)
        result: Result | None = None
        pruned_at: float | None = None
        while True:
            exited = process.poll() is not None
            for event in process.events.read_new():
                if isinstance(event, Setup):
                    trial.set_user_attr(attrs.BACKEND, event.backend)
                    trial.set_user_attr(attrs.DEVICE, event.device)
                    trial.set_user_attr(attrs.RESUMED_FROM_STEP, event.resumed_from_step)
                    self.progress.trial_step(trial.number, 0, event.total_steps)
                elif isinstance(event, Progress):
                    self.progress.trial_step(trial.number, event.step, event.total_steps)
                elif isinstance(event, Evaluation):
                    if reporter.evaluated(event.step, event.eval_loss, event.point):
                        process.request_stop()
                        pruned_at = time.time()
                elif isinstance(event, Result):
                    result = event
            if exited:
                break
            if self.stopping.is_set():
                process.kill(grace_seconds=INTERRUPT_GRACE_SECONDS)
                trial.set_user_attr(attrs.FAIL_REASON, attrs.INTERRUPTED)
                raise Interrupted()
            if timeout and time.time() - process.started > timeout * 60:
                process.kill()
                trial.set_user_attr(attrs.FAIL_DETAIL, f"still running after the time limit of {timeout:g} min")
                return Result(status="error", reason="timeout")
            if pruned_at and time.time() - pruned_at > PRUNE_GRACE_SECONDS:
                process.kill()
                break
            time.sleep(POLL_SECONDS)
        trial.set_user_attr(attrs.EXIT_STATUS, process.poll())
        trial.set_user_attr(attrs.WALL_SECONDS, round(time.time() - process.started, 2))
        if self.stopping.is_set() and (result is None or result.status != "ok"):
            trial.set_user_attr(attrs.FAIL_REASON, attrs.INTERRUPTED)
            raise Interrupted()
        if pruned_at is not None:
            return result if result and result.status == "stopped" else Result(status="stopped", reason="pruned")
        if result is None:
            return self._died(trial, process)
        return result

    @staticmethod
    def _died(trial: optuna.Trial, process: TrainerProcess) -> Result:
        """The result of a trainer that ended without reporting one (killed, or broken before it could)."""
        code, last = process.poll(), process.last_log_line()
        trial.set_user_attr(attrs.FAIL_DETAIL, f"trainer exited with code {code}; last log line: {last}")
        if code is not None and code < 0:
            return Result(status="error", reason=f"crash: trainer killed by {signal.Signals(-code).name}")
        return Result(status="error", reason=f"crash: {last or f'trainer exited with code {code}'}")

    def _conclude(self, trial: optuna.Trial, result: Result) -> float:
        for key in attrs.RESULT_FIELDS:
            value = getattr(result, key)
            if value is not None:
                trial.set_user_attr(key, value)
        if result.samples:
            trial.set_user_attr(attrs.SAMPLES, result.samples)
        if result.status == "ok" and not (result.adapter_path and adapter_complete(result.adapter_path)):
            result = Result(status="error", reason=f"crash: the trainer reported an adapter at {result.adapter_path} "
                                                   "that is missing or incomplete")
        if result.status == "ok":
            trial.set_user_attr(attrs.ADAPTER_PATH, result.adapter_path)
            self.progress.trial_finished(trial.number, "COMPLETE", result.eval_loss)
            return result.eval_loss
        if result.status == "stopped":
            self.progress.trial_finished(trial.number, "PRUNED", None)
            raise optuna.TrialPruned()
        reason = result.reason or result.status
        if result.status == "oom":
            trial.set_user_attr(attrs.FAIL_DETAIL, reason)
            reason = "oom"
        trial.set_user_attr(attrs.FAIL_REASON, reason)
        self.progress.trial_finished(trial.number, "FAIL", None, reason)
        if result.status == "bad_input":
            raise UserError(f"{self.study.path}: trial {trial.number} cannot run: {reason}")
        raise TrialFailed(reason)

    def close(self) -> None:
        """End the idle warm workers (running trials end with their threads)."""
        if self.warm is not None:
            self.warm.close()

    def interrupt(self) -> None:
        """Stop the run: each running trial's thread ends its trainer and records it as interrupted."""
        self.stopping.set()
        self.pool.wake()

