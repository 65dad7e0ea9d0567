"""The study's rows against its tokenizer, before the study is created (the counting runs in a subprocess).

Counting tokens needs transformers, which the orchestrator never imports; ``python -m
trainer.row_lengths`` (see there) loads the tokenizer and the rows as a trial would and answers with
each split's token lengths. A split whose every row is longer than ``model.max_seq_length`` is
refused (a trial would cut every row, most often to nothing of the answer); one where only some
rows are longer gets a warning. The subprocess reads hub models from the cache only
(``HF_HUB_OFFLINE=1``): :mod:`sweep.checks.model_source` has already found the model there.

The subprocess takes a few seconds (importing transformers imports torch), so its answer is kept
in the study's cache folder once the study exists, keyed by the model and data sections, the
files behind them (names, sizes, modification times; of a hub dataset, those of its cached copy), this host and the code that reads and
counts rows; a later run on the same inputs (a resume, another worker) reads it instead.

Example::

    record = check_rows_fit(study, study_dir(runs_dir, study.name))   # raises UserError, or warns
    ...                                                               # create the study
    record()                                                          # keep the answer for later runs
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from sweep.errors import UserError
from sweep.launch.trainer_process import PROJECT_ROOT, child_env
from sweep.schema.study_file import Study
from trainer.data_check import sources
from trainer.hf_cache import hub_cache_dir
from trainer.hub_data import find_cached
from trainer.row_lengths import LengthCheck, LengthReport
from trainer.rows import RowError

CODE = ("trainer/rows.py", "trainer/data_check.py", "trainer/trial_data.py", "trainer/chat_data.py",
        "trainer/row_lengths.py", "trainer/hub_data.py", "trainer/chat_templates.py",
        "trainer/unsloth_chat_templates.json")  # what decides the answer


def check_rows_fit(study: Study, folder: Path) -> Callable[[], None]:
    """Refuse a study no trial could train on; warn about rows a trial would cut. Writes nothing itself:
    returns the function that keeps the answer in ``folder/cache``, to call once the study exists."""
    check = LengthCheck(model=study.config.model, data=study.config.data)
    kept = folder / "cache" / f"row-lengths-{_inputs_key(check)}.json"
    try:
        report, fresh = LengthReport.model_validate_json(kept.read_text()), False
    except (OSError, ValueError):
        report, fresh = _measure(check), True
    _judge(study, report)

    def record() -> None:
        if fresh:
            kept.parent.mkdir(parents=True, exist_ok=True)
            partial = kept.with_name(f".{kept.name}.{os.getpid()}")
            partial.write_text(report.model_dump_json() + "\n")
            os.replace(partial, kept)

    return record


def _measure(check: LengthCheck) -> LengthReport:
    done = subprocess.run([sys.executable, "-m", "trainer.row_lengths"], input=check.model_dump_json(), text=True,
                          capture_output=True, cwd=PROJECT_ROOT, env=child_env({"HF_HUB_OFFLINE": "1"}))
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        detail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"checking the rows against the tokenizer failed (exit {done.returncode}): {detail}")
    return LengthReport.model_validate_json(lines[-1])


def _judge(study: Study, report: LengthReport) -> None:
    if report.problem:
        raise UserError(f"{study.path}: {report.key}: {report.problem}")
    limit = study.config.model.max_seq_length
    for split in report.splits:
        if split.over == split.rows:
            raise UserError(f"{study.path}: model.max_seq_length: {limit} is shorter than every row of {split.key} "
                            f"(all {split.rows} rows are longer: {split.shortest} to {split.longest} tokens); raise "
                            "model.max_seq_length or shorten the rows")
        if split.over:
            print(f"warning: {study.path}: {split.over} of {split.rows} rows of {split.key} are longer than "
                  f"model.max_seq_length ({limit} tokens; the longest has {split.longest}): trials cut them to it",
                  file=sys.stderr, flush=True)


def _inputs_key(check: LengthCheck) -> str:
    h = hashlib.sha256(check.model_dump_json().encode())
    h.update(socket.gethostname().encode())  # whether a GPU is there is part of the answer
    for name in CODE:
        h.update((PROJECT_ROOT / name).read_bytes())
    model = check.model.name_or_path
    model_files = Path(model) if Path(model).is_absolute() else \
        hub_cache_dir() / f"models--{model.replace('/', '--')}" / "snapshots"
    paths = [model_files]
    for source in sources(check.data):
        if not source.hub:
            paths.append(Path(source.value))
            continue
        try:  # a hub dataset: the files of its cached copy
            paths += find_cached(source.value, check.data.subset, source.key).files()
        except RowError:  # not cached: the subprocess says so (the pre-flight check has already)
            continue
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            stat = file.stat()
            h.update(f"{file}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]
