"""The Optuna objective: sample a configuration, run it in a trainer subprocess, record what came back.

Each call builds the trial's :class:`trainer.spec.TrialSpec`, writes it to the trial's folder, starts
``python -m trainer`` on it and follows its events: eval losses are reported to Optuna (which may
prune), progress goes to the live view. The trial's value is the final eval loss; everything else
the trainer measured is stored as user attributes. Failures become FAIL trials with a
``fail_reason`` (``oom``, ``timeout``, ``crash: ...``) and the study goes on.
"""

from __future__ import annotations

import queue
import shutil
import threading
import time
from pathlib import Path

import optuna

from sweep.errors import UserError
from sweep.eval_reporter import EvalReporter
from sweep.progress import ProgressView
from sweep.repeats import earlier_trial, repeat_outcome
from sweep.study_file import Study
from sweep.trainer_process import TrainerProcess
from trainer.events import Evaluation, Progress, Result, Setup
from trainer.spec import LoraSpec, TrainingSpec, TrialSpec

POLL_SECONDS = 0.2
PRUNE_GRACE_SECONDS = 60
RETRY_OF = "retry_of"  # user attr on a trial that repeats an interrupted one, to resume its checkpoint


class TrialFailed(Exception):
    """A trial ended without a result; the message is its ``fail_reason``."""


class Interrupted(KeyboardInterrupt):
    """The orchestrator was asked to stop (Ctrl-C or SIGTERM) while this trial ran."""


class Objective:
    """Callable passed to ``study.optimize``; thread-safe, one slot (GPU or CPU) per running trial."""

    def __init__(self, study: Study, folder: Path, progress: ProgressView, slots: list[str | None]) -> None:
        self.study = study
        self.folder = folder
        self.progress = progress
        self.slots: queue.Queue[str | None] = queue.Queue()
        for slot in slots:
            self.slots.put(slot)
        self.stopping = threading.Event()
        self._running: dict[int, TrainerProcess] = {}
        self._lock = threading.Lock()

    def __call__(self, trial: optuna.Trial) -> float:
        values = self.study.config.search.params.sample(trial)
        trial.set_user_attr("lora_alpha", values["lora_alpha"])
        trial.set_user_attr("use_rslora", values["use_rslora"])
        earlier = earlier_trial(trial)
        if earlier is not None:  # the same seeded run already ran: training it again would only repeat it
            self.progress.trial_finished(trial.number, earlier.state.name, earlier.value,
                                         f"same as trial {earlier.number}, not trained again")
            return repeat_outcome(trial, earlier)
        trial_dir = self.trial_dir(trial)
        trial.set_user_attr("trial_dir", str(trial_dir))
        spec = self.build_spec(trial, values, trial_dir)
        slot = self.slots.get()
        try:
            return self._run_with_oom_retry(trial, spec, slot)
        finally:
            self.slots.put(slot)

    def trial_dir(self, trial: optuna.Trial) -> Path:
        """The trial's folder; a retry of an interrupted trial reuses the original's, to resume its checkpoint."""
        original = trial.user_attrs.get(RETRY_OF)
        if original is None:
            original = trial.storage.get_trial(trial._trial_id).system_attrs.get("failed_trial")
        number = trial.number if original is None else original
        path = self.folder / "trials" / f"{number:05d}"
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
        )

    def _run_with_oom_retry(self, trial: optuna.Trial, spec: TrialSpec, slot: str | None) -> float:
        result = self._run_once(trial, spec, slot)
        t = spec.training
        if result.status == "oom" and t.per_device_train_batch_size > 1:
            half = t.per_device_train_batch_size // 2
            trial.set_user_attr("oom_retry", f"micro-batch {t.per_device_train_batch_size} -> {half}")
            spec.training = t.model_copy(update={"per_device_train_batch_size": half,
                                                 "gradient_accumulation_steps": t.gradient_accumulation_steps * 2})
            spec.resume = False
            shutil.rmtree(spec.out / "checkpoints", ignore_errors=True)
            result = self._run_once(trial, spec, slot)
        return self._conclude(trial, result)

    def _run_once(self, trial: optuna.Trial, spec: TrialSpec, slot: str | None) -> Result:
        spec_path = spec.out / "spec.json"
        spec.write(spec_path)
        for stale in ("STOP", "events.jsonl"):
            (spec.out / stale).unlink(missing_ok=True)
        env = {"CUDA_VISIBLE_DEVICES": slot} if slot is not None else {}
        process = TrainerProcess(spec.out, spec_path, env)
        trial.set_user_attr("log_path", str(process.log_path))
        with self._lock:
            self._running[trial.number] = process
        self.progress.trial_started(trial.number, spec.params)
        try:
            return self._follow(trial, spec, process)
        finally:
            with self._lock:
                self._running.pop(trial.number, None)

    def _follow(self, trial: optuna.Trial, spec: TrialSpec, process: TrainerProcess) -> Result:
        timeout = self.study.config.execution.timeout_minutes
        reporter = EvalReporter(trial)
        result: Result | None = None
        pruned_at: float | None = None
        while True:
            exited = process.poll() is not None
            for event in process.events.read_new():
                if isinstance(event, Setup):
                    trial.set_user_attr("backend", event.backend)
                    trial.set_user_attr("device", event.device)
                    trial.set_user_attr("resumed_from_step", event.resumed_from_step)
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
                process.kill()
                trial.set_user_attr("fail_reason", "interrupted")
                raise Interrupted()
            if timeout and time.time() - process.started > timeout * 60:
                process.kill()
                return Result(status="error", reason=f"timeout: still running after {timeout:g} min")
            if pruned_at and time.time() - pruned_at > PRUNE_GRACE_SECONDS:
                process.kill()
                break
            time.sleep(POLL_SECONDS)
        trial.set_user_attr("exit_status", process.poll())
        trial.set_user_attr("wall_seconds", round(time.time() - process.started, 2))
        if self.stopping.is_set() and (result is None or result.status != "ok"):
            trial.set_user_attr("fail_reason", "interrupted")
            raise Interrupted()
        if pruned_at is not None:
            return result if result and result.status == "stopped" else Result(status="stopped", reason="pruned")
        if result is None:
            code = process.poll()
            return Result(status="error", reason=f"crash: trainer exited with code {code}: {process.last_log_line()}")
        return result

    def _conclude(self, trial: optuna.Trial, result: Result) -> float:
        for key in ("train_loss", "tokens_per_second", "peak_memory_mb", "train_seconds", "steps", "backend"):
            value = getattr(result, key)
            if value is not None:
                trial.set_user_attr(key, value)
        if result.samples:
            trial.set_user_attr("samples", result.samples)
        if result.status == "ok":
            trial.set_user_attr("adapter_path", result.adapter_path)
            self.progress.trial_finished(trial.number, "COMPLETE", result.eval_loss)
            return result.eval_loss
        if result.status == "stopped":
            self.progress.trial_finished(trial.number, "PRUNED", None)
            raise optuna.TrialPruned()
        reason = result.reason or result.status
        if result.status == "oom" and not reason.startswith("oom"):
            reason = f"oom: {reason}"
        trial.set_user_attr("fail_reason", reason)
        self.progress.trial_finished(trial.number, "FAIL", None, reason)
        if result.status == "bad_input":
            raise UserError(f"{self.study.path}: trial {trial.number} cannot run: {reason}")
        raise TrialFailed(reason)

    def interrupt(self) -> None:
        """Stop every running trainer now (their trials are recorded as interrupted)."""
        self.stopping.set()
        with self._lock:
            running = list(self._running.values())
        for process in running:
            process.kill(grace_seconds=2.0)
