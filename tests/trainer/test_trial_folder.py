"""The one rule for "is this adapter folder complete?", shared by the objective, ``export`` and ``merge``."""

from __future__ import annotations

import pytest

from trainer.trial_folder import (
    ADAPTER_CONFIG_FILE,
    ADAPTER_SPEC_FILE,
    ADAPTER_WEIGHTS_FILES,
    adapter_complete,
    adapter_contents,
)


@pytest.mark.parametrize("weights", ADAPTER_WEIGHTS_FILES)
def test_an_adapter_with_config_weights_and_spec_is_complete(tmp_path, weights):
    for name in (ADAPTER_CONFIG_FILE, weights, ADAPTER_SPEC_FILE):
        (tmp_path / name).write_text("{}")
    assert adapter_complete(tmp_path) and adapter_complete(str(tmp_path))


@pytest.mark.parametrize("missing", [ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILES[0], ADAPTER_SPEC_FILE])
def test_an_adapter_missing_any_part_is_not(tmp_path, missing):
    for name in {ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILES[0], ADAPTER_SPEC_FILE} - {missing}:
        (tmp_path / name).write_text("{}")
    assert not adapter_complete(tmp_path)
    assert missing in adapter_contents()


def test_a_missing_folder_is_not_complete(tmp_path):
    assert not adapter_complete(tmp_path / "gone")
