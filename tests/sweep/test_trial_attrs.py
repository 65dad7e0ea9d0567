"""The attribute names the objective copies from the trainer's events are fields of those events."""

from __future__ import annotations

from sweep.study import trial_attrs
from trainer.events import Result, Setup


def test_result_fields_recorded_by_name_are_fields_of_the_result_event():
    assert set(trial_attrs.RESULT_FIELDS) <= set(Result.model_fields)
    assert {trial_attrs.SAMPLES, trial_attrs.ADAPTER_PATH} <= set(Result.model_fields)


def test_setup_fields_recorded_by_name_are_fields_of_the_setup_event():
    assert {trial_attrs.BACKEND, trial_attrs.DEVICE, trial_attrs.RESUMED_FROM_STEP} <= set(Setup.model_fields)


def test_every_name_is_distinct():
    names = [value for key, value in vars(trial_attrs).items()
             if key.isupper() and isinstance(value, str) and key != "INTERRUPTED"]
    assert len(names) == len(set(names))
