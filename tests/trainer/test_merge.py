"""``python -m trainer.merge``: what it says when it is not given a trial's adapter folder."""

from __future__ import annotations

from tests.sweep.live_study import run_module


def test_merge_of_a_folder_that_is_no_adapter_is_a_one_line_error(tmp_path):
    (tmp_path / "adapter").mkdir()
    done = run_module("trainer.merge", str(tmp_path / "adapter"), str(tmp_path / "out"), timeout=120)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"error: {tmp_path / 'adapter'}: not a trial's adapter folder "
                                        "(needs adapter_config.json, adapter_model.safetensors and trial_spec.json)"]
    assert not (tmp_path / "out").exists()
