"""What a resumed trainer reads from its trial folder: the newest complete checkpoint that this very
trial wrote (same study, folder and configuration), the train loss over all steps, and the folder
lock that keeps one trainer per folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.checkpoints import claim, drop, resume_point
from trainer.process_guard import FolderBusy, hold_trial_folder
from trainer.run_trial import mean_train_loss
from trainer.spec import TrialSpec
from trainer.trial_folder import CHECKPOINT_DIR


def spec_for(folder, study_uid="uid-1", **training) -> TrialSpec:
    return TrialSpec.model_validate({
        "study": "s", "trial_number": 0, "output_dir": str(folder), "study_uid": study_uid,
        "model": {"name_or_path": "m"}, "data": {"train": "t.jsonl", "eval": "e.jsonl"},
        "lora": {"r": 8, "lora_alpha": 16},
        "training": {"learning_rate": 1e-3, "num_train_epochs": 1, "per_device_train_batch_size": 8, **training},
    })


def checkpoint(folder, step: int, complete: bool = True) -> None:
    path = folder / CHECKPOINT_DIR / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if complete:  # else: killed before the Trainer wrote its state, the last file it writes
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))


def test_a_checkpoint_left_half_written_is_skipped_and_removed(tmp_path):
    claim(spec_for(tmp_path))
    checkpoint(tmp_path, 2)
    checkpoint(tmp_path, 10)
    checkpoint(tmp_path, 12, complete=False)
    point = resume_point(spec_for(tmp_path))
    assert (point.path, point.step, point.note) == (str(tmp_path / CHECKPOINT_DIR / "checkpoint-10"), 10, None)
    assert not (tmp_path / CHECKPOINT_DIR / "checkpoint-12").exists()


@pytest.mark.parametrize("other, why", [
    (lambda folder: spec_for(folder, study_uid="uid-2"), "another study"),
    (lambda folder: spec_for(folder, learning_rate=2e-3), "another configuration"),
    (lambda folder: spec_for(folder, per_device_train_batch_size=4), "another configuration"),
])
def test_a_checkpoint_of_another_trial_is_removed_not_resumed(tmp_path, other, why):
    claim(spec_for(tmp_path))
    checkpoint(tmp_path, 4)
    point = resume_point(other(tmp_path))
    assert (point.path, point.step) == (None, 0) and why in point.note
    assert not (tmp_path / CHECKPOINT_DIR).exists()


def test_a_checkpoint_without_owner_is_not_resumed(tmp_path):
    checkpoint(tmp_path, 4)  # written before checkpoints had owners, or the record was lost
    assert "no owner record" in resume_point(spec_for(tmp_path)).note
    assert resume_point(spec_for(tmp_path / "never-ran")) == resume_point(spec_for(tmp_path))


def test_a_retry_in_the_same_folder_resumes_whatever_its_trial_number(tmp_path):
    claim(spec_for(tmp_path))
    checkpoint(tmp_path, 6)
    retry = spec_for(tmp_path).model_copy(update={"trial_number": 7})
    assert resume_point(retry).step == 6


def test_a_retry_killed_while_claiming_leaves_the_checkpoints_resumable(tmp_path, monkeypatch):
    claim(spec_for(tmp_path))
    checkpoint(tmp_path, 6)
    write = Path.write_text

    def killed_midway(path, text, *args, **kwargs):  # the file opened (emptied), then SIGKILL before its text
        write(path, "", *args, **kwargs)
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(Path, "write_text", killed_midway)
    retry = spec_for(tmp_path).model_copy(update={"trial_number": 7})
    with pytest.raises(KeyboardInterrupt):
        claim(retry)
    monkeypatch.undo()
    point = resume_point(spec_for(tmp_path).model_copy(update={"trial_number": 8}))
    assert (point.step, point.note) == (6, None)  # not "no owner record": every checkpoint removed, step 0


def test_finished_trials_drop_their_checkpoints_unless_kept(tmp_path):
    claim(spec_for(tmp_path))
    checkpoint(tmp_path, 6)
    drop(spec_for(tmp_path).model_copy(update={"keep_checkpoints": True}))
    assert (tmp_path / CHECKPOINT_DIR / "checkpoint-6").exists()
    drop(spec_for(tmp_path))
    assert not (tmp_path / CHECKPOINT_DIR).exists()


def test_train_loss_covers_the_steps_before_a_resume():
    history = [{"loss": 4.0, "step": 2}, {"eval_loss": 9.0, "step": 2}, {"loss": 2.0, "step": 3}]
    assert mean_train_loss(history, fallback=0.0) == pytest.approx((4.0 * 2 + 2.0) / 3)
    assert mean_train_loss([], fallback=1.5) == 1.5


def test_one_trainer_at_a_time_holds_a_trial_folder(tmp_path):
    first = hold_trial_folder(tmp_path, wait_seconds=1)
    with pytest.raises(FolderBusy):
        hold_trial_folder(tmp_path, wait_seconds=0.3)
    first.close()  # the previous trainer is gone
    hold_trial_folder(tmp_path, wait_seconds=1).close()
