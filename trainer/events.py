"""Structured events from the trainer to the orchestrator, one JSON object per line in ``events.jsonl``.

The trainer appends (and flushes) one line per event; the orchestrator tails the file with
:class:`EventReader`. Nothing is ever parsed out of log text. The last event of a trial is a
:class:`Result`. Imports pydantic only.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class _Event(BaseModel):
    # NaN (a diverged eval loss) is written as the JSON constant NaN, which json.loads reads back;
    # pydantic's default writes null, which then fails validation and crashes the reader
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")
    time: float = Field(default_factory=time.time)


class Started(_Event):
    """The trainer process is up and its spec is valid."""

    event: Literal["started"] = "started"
    pid: int


class Phase(_Event):
    """A phase finished (start-up: imports, model, lora, data, trainer, first_step; then trained, samples); seconds
    since its start."""

    event: Literal["phase"] = "phase"
    name: str
    seconds: float


class Setup(_Event):
    """Training is about to start: what was chosen and how many steps it will take."""

    event: Literal["setup"] = "setup"
    backend: Literal["unsloth", "transformers", "grouped"]
    device: str
    total_steps: int
    train_rows: int
    eval_rows: int
    resumed_from_step: int = 0
    resume_note: str | None = None  # why a checkpoint in the folder was not resumed
    notes: list[str] = Field(default_factory=list)


class Progress(_Event):
    """A logged training step."""

    event: Literal["progress"] = "progress"
    step: int
    total_steps: int
    loss: float | None = None
    learning_rate: float | None = None
    epoch: float | None = None


class Evaluation(_Event):
    """Eval loss at a step; ``point`` is its ordinal among the trial's evenly spread eval points.

    ``restored``: measured by an earlier, interrupted run of this trial and read back from the
    checkpoint it resumes from, so a resumed trial reports its whole history.
    """

    event: Literal["eval"] = "eval"
    step: int
    total_steps: int
    eval_loss: float
    point: int | None = None
    restored: bool = False


class Result(_Event):
    """The trial's outcome; the last event."""

    event: Literal["result"] = "result"
    status: Literal["ok", "stopped", "oom", "error", "bad_input"]
    reason: str | None = None
    eval_loss: float | None = Field(None, description="Eval loss after the last step.")
    train_loss: float | None = None
    adapter_path: str | None = None
    adapter_step: int | None = Field(None, description="The step whose weights the adapter holds.")
    adapter_eval_loss: float | None = Field(None, description="The eval loss of those weights.")
    steps: int = 0
    tokens_per_second: float | None = None
    peak_memory_mb: float | None = None
    train_seconds: float | None = None
    train_tokens: int | None = None
    backend: str | None = None
    samples: list[dict[str, str]] = Field(default_factory=list, description="Each: prompt, reference, answer.")
    chrf: float | None = Field(None, description="Corpus chrF (0-100) of the samples' answers against the references.")
    worker_exits: bool = Field(False, description="A warm worker ran this trial and exits after it.")
    gpu_leak_mb: float | None = Field(None, description="Warm worker: GPU memory left allocated after the trial.")


Event = Annotated[Started | Phase | Setup | Progress | Evaluation | Result, Field(discriminator="event")]
_EVENT = TypeAdapter(Event)


class EventWriter:
    """Appends events to a trial's ``events.jsonl``, flushing each line so a reader sees it at once."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file = self.path.open("a", buffering=1)

    def emit(self, event: _Event) -> None:
        self._file.write(event.model_dump_json() + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class EventReader:
    """Reads the events appended to a file since the last call; a partly written last line waits."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._offset = 0
        self._pending = b""

    def read_new(self) -> list[_Event]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        self._offset += len(chunk)
        data = self._pending + chunk
        *lines, self._pending = data.split(b"\n")
        return [_EVENT.validate_python(json.loads(line)) for line in lines if line.strip()]


def read_all(path: Path) -> list[_Event]:
    """Every complete event in a file (empty if the file does not exist)."""
    return EventReader(path).read_new()
