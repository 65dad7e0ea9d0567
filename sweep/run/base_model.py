"""The base model before any training, measured once per study: the line every trial is read against.

Where a study asks for sample answers (``samples.count > 0``), the first run also runs one trainer
with ``evaluate_only`` (:class:`trainer.spec.TrialSpec`): the base model's eval loss, its answers to
the same eval prompts and their chrF, through the very code that measures the trials, in
``runs/NAME/base/``. It runs beside the first trials, in its own process, and its figures become
study attributes (``base_eval_loss``, ``base_chrf``) shown by ``status``, the report and, as the
study's note, optuna-dashboard. A run stopped before it ends measures it again next time.

    base = BaseMeasurement(optuna_study, study, folder, uid, env, stopping)
    base.start()     # a thread; nothing to do where the study has its figures already
    ...
    base.close()     # waits for it to end (a stopping run ends its trainer instead)
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sweep.launch.trainer_process import TrainerProcess
from sweep.schema.study_file import Study
from sweep.study.trial_attrs import BASE_CHRF, BASE_EVAL_LOSS
from trainer.events import Result, read_all
from trainer.spec import TrialSpec
from trainer.trial_folder import EVENTS_FILE, SPEC_FILE

BASE_DIR = "base"
POLL_SECONDS = 0.5


def base_line(user_attrs: dict) -> str | None:
    """One line saying how the base model did, or None if it was not measured."""
    if BASE_EVAL_LOSS not in user_attrs:
        return None
    chrf = user_attrs.get(BASE_CHRF)
    return f"base model before training: eval_loss {user_attrs[BASE_EVAL_LOSS]:.4f}" + (
        f", chrF {chrf:.1f}" if chrf is not None else "")


class BaseMeasurement:
    """Measures the base model in a background thread, unless the study has its figures already."""

    def __init__(self, optuna_study, study: Study, folder: Path, study_uid: str, env: dict[str, str],
                 stopping: threading.Event) -> None:
        self.optuna_study, self.study, self.folder = optuna_study, study, Path(folder) / BASE_DIR
        self.study_uid, self.env, self.stopping = study_uid, env, stopping
        self.process: TrainerProcess | None = None
        self.thread: threading.Thread | None = None

    @property
    def needed(self) -> bool:
        return self.study.config.samples.count > 0 and BASE_EVAL_LOSS not in self.optuna_study.user_attrs

    def start(self) -> None:
        if self.needed:
            self.thread = threading.Thread(target=self._measure, name="base-model", daemon=True)
            self.thread.start()

    def close(self) -> None:
        """Wait for the measurement to end; a stopping run ends its trainer instead."""
        if self.thread is None:
            return
        if self.stopping.is_set() and self.process is not None and self.process.poll() is None:
            self.process.kill(grace_seconds=2.0)
        while self.thread.is_alive():  # short joins: the main thread must stay free for signal handlers
            self.thread.join(0.2)

    def _measure(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        spec_path = self.folder / SPEC_FILE
        self.spec().write(spec_path)
        (self.folder / EVENTS_FILE).unlink(missing_ok=True)  # an earlier, stopped measurement's
        self.process = TrainerProcess(self.folder, spec_path, self.env)
        while self.process.poll() is None and not self.stopping.is_set():
            time.sleep(POLL_SECONDS)
        result = next((e for e in reversed(read_all(self.folder / EVENTS_FILE)) if isinstance(e, Result)), None)
        if result is not None and result.status == "ok" and not self.stopping.is_set():
            self.optuna_study.set_user_attr(BASE_EVAL_LOSS, result.eval_loss)
            if result.chrf is not None:
                self.optuna_study.set_user_attr(BASE_CHRF, result.chrf)
            _note(self.optuna_study, base_line(self.optuna_study.user_attrs))

    def spec(self) -> TrialSpec:
        """An ``evaluate_only`` spec: the study's model, data and samples; LoRA attached but never trained."""
        c = self.study.config
        lora, training = c.space.first_sections()  # LoRA on the modules a trial adapts, left untrained
        return TrialSpec(
            study=self.study.name, trial_number=0, params={}, model=c.model, data=c.data,
            lora=lora, samples=c.samples, training=training,
            output_dir=str(self.folder), backend=c.execution.backend, cache_dir=str(self.folder.parent / "cache"),
            study_uid=self.study_uid, evaluate_only=True,
        )


def _note(optuna_study, line: str | None) -> None:
    """The base line as the study's note, the first thing optuna-dashboard shows of a study."""
    try:
        from optuna_dashboard import save_note
    except ImportError:  # a trimmed install (a GPU image without the dashboard): the study's attributes hold it
        return
    if line:
        save_note(optuna_study, f"**{line}**\n\nEach trial's eval loss and chrF are measured the same way.")
