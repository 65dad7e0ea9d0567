"""A trial's checkpoints, bound to the trial that wrote them.

A trial folder is named by its trial number alone, so without a check a trial of a new study over an
old runs folder (a deleted or replaced ``study.db``, another ``--storage``), or a trial whose
configuration was edited, would "resume" a checkpoint it never wrote and report another run's loss
as its own. Every checkpoint folder therefore carries an owner record (``checkpoints/owner.json``):
the study's id, the trial folder, and a hash of the trial's resolved spec (everything that changes
what training computes). A trainer resumes only a checkpoint whose record equals its own; anything
else is removed and the trial starts at step 0, with the reason in its ``Setup`` event.

    >>> point = resume_point(spec)          # doctest: +SKIP
    >>> point.path, point.step, point.note  # e.g. (None, 0, "checkpoint of another study (...)")

The Trainer writes a checkpoint in place and its ``trainer_state.json`` last, so a process killed
while saving leaves a newer, incomplete folder: those are skipped and removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from trainer.spec import TrialSpec
from trainer.trial_folder import CHECKPOINT_DIR, OWNER_FILE

# what a trial's spec may differ in and still be the same run: where it runs and what it reports
NOT_HASHED = {"trial_number", "output_dir", "resume", "cache_dir", "study_uid", "samples", "keep_checkpoints", "study_dir",
              "keep_adapter"}


def spec_hash(spec: TrialSpec) -> str:
    """A hash of everything in ``spec`` that changes what training computes."""
    content = spec.model_dump(mode="json", exclude=NOT_HASHED)
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def owner_record(spec: TrialSpec) -> dict:
    """Who may resume the checkpoints of ``spec``'s folder: this study, this folder, this configuration."""
    return {"study_uid": spec.study_uid, "folder": spec.out.name, "spec_hash": spec_hash(spec)}


@dataclass(frozen=True)
class ResumePoint:
    """Where a trial starts: a checkpoint to resume (``path``, ``step``) or step 0, and why not resumed."""

    path: str | None = None
    step: int = 0
    note: str | None = None


def resume_point(spec: TrialSpec) -> ResumePoint:
    """The newest complete checkpoint that this trial wrote, or step 0 with the reason (removing the others)."""
    folder = spec.out / CHECKPOINT_DIR
    found = sorted((p for p in folder.glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name)),
                   key=lambda p: int(p.name.rsplit("-", 1)[1]), reverse=True)
    if not spec.resume or not found:
        return ResumePoint()
    why_not = _foreign(spec, folder / OWNER_FILE)
    if why_not is not None:
        shutil.rmtree(folder, ignore_errors=True)
        return ResumePoint(note=f"not resumed: {why_not}; started at step 0")
    for candidate in found:
        try:
            json.loads((candidate / "trainer_state.json").read_text())
        except (OSError, ValueError):
            shutil.rmtree(candidate, ignore_errors=True)
            continue
        return ResumePoint(path=str(candidate), step=int(candidate.name.rsplit("-", 1)[1]))
    return ResumePoint()


def _foreign(spec: TrialSpec, owner_file: Path) -> str | None:
    """Why the checkpoints beside ``owner_file`` are not this trial's, or None if they are."""
    try:
        owner = json.loads(owner_file.read_text())
    except (OSError, ValueError):
        return "the checkpoint has no owner record (written by an older version or cut short)"
    mine = owner_record(spec)
    if owner.get("study_uid") != mine["study_uid"]:
        return f"the checkpoint belongs to another study (id {owner.get('study_uid')}, this one {mine['study_uid']})"
    if owner.get("folder") != mine["folder"]:
        return f"the checkpoint belongs to trial folder {owner.get('folder')}"
    if owner.get("spec_hash") != mine["spec_hash"]:
        return "the checkpoint was made with another configuration (the trial's spec changed)"
    return None


def claim(spec: TrialSpec) -> None:
    """Record this trial as the owner of the checkpoints it is about to write: written aside, then renamed into
    place, so a process killed meanwhile leaves the record as it was (a record cut short makes the next attempt
    remove every checkpoint as foreign, and start again at step 0)."""
    folder = spec.out / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{OWNER_FILE}.partial"
    partial.write_text(json.dumps(owner_record(spec)) + "\n")
    os.replace(partial, folder / OWNER_FILE)


def drop(spec: TrialSpec) -> None:
    """Remove a finished trial's checkpoints (its adapter stays), unless the spec keeps them."""
    if not spec.keep_checkpoints:
        shutil.rmtree(spec.out / CHECKPOINT_DIR, ignore_errors=True)
