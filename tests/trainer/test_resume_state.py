"""What a resumed trainer reads from its trial folder: the newest complete checkpoint of its own
micro-batch, the train loss over all steps, and the folder lock that keeps one trainer per folder."""

from __future__ import annotations

import json

import pytest

from trainer.process_guard import FolderBusy, hold_trial_folder
from trainer.run_trial import last_checkpoint, mean_train_loss
from trainer.spec import TrialSpec


def spec_for(folder) -> TrialSpec:
    return TrialSpec.model_validate({
        "study": "s", "trial_number": 0, "output_dir": str(folder),
        "model": {"name_or_path": "m"}, "data": {"train": "t.jsonl", "eval": "e.jsonl"},
        "lora": {"r": 8, "lora_alpha": 16}, "training": {"learning_rate": 1e-3, "num_train_epochs": 1},
    })


def checkpoint(folder, step: int, micro_batch: int | None) -> None:
    path = folder / "checkpoints" / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if micro_batch is not None:  # None: killed before the Trainer wrote its state, the last file it writes
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step, "train_batch_size": micro_batch}))


def test_a_checkpoint_left_half_written_is_skipped_and_removed(tmp_path):
    checkpoint(tmp_path, 2, 8)
    checkpoint(tmp_path, 10, 8)
    checkpoint(tmp_path, 12, None)
    assert last_checkpoint(spec_for(tmp_path), micro_batch=8) == str(tmp_path / "checkpoints" / "checkpoint-10")
    assert not (tmp_path / "checkpoints" / "checkpoint-12").exists()


def test_a_checkpoint_of_another_micro_batch_is_not_resumed(tmp_path):
    checkpoint(tmp_path, 4, 8)
    assert last_checkpoint(spec_for(tmp_path), micro_batch=4) is None
    assert last_checkpoint(spec_for(tmp_path / "never-ran"), micro_batch=8) is None


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
