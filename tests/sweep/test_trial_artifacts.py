"""Each finished trial carries its spec, log and sample generations in the study's artifact store."""

from __future__ import annotations

import json

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact, get_all_artifact_meta

from sweep.results.trial_artifacts import write_samples
from sweep.study.optuna_internals import storage_of
from trainer.spec import TrialSpec
from trainer.trial_folder import SAMPLES_FILE


def _read_artifact(store, meta, tmp_path) -> str:
    path = tmp_path / meta.artifact_id
    download_artifact(artifact_store=store, file_path=str(path), artifact_id=meta.artifact_id)
    return path.read_text(encoding="utf-8")


def test_every_trial_has_its_spec_log_and_samples_attached(finished_study, tmp_path):
    study = optuna.load_study(study_name=finished_study.name, storage=finished_study.storage)
    store = FileSystemArtifactStore(finished_study.folder / "artifacts")
    assert len(study.trials) == 2
    for trial in study.trials:
        metas = {meta.filename: meta for meta in get_all_artifact_meta(trial, storage=storage_of(study))}
        assert sorted(metas) == ["samples.jsonl", "spec.json", "trainer.log"]
        spec = TrialSpec.model_validate_json(_read_artifact(store, metas["spec.json"], tmp_path))
        assert spec.trial_number == trial.number and spec.params == trial.params | spec.params
        assert "Traceback" not in _read_artifact(store, metas["trainer.log"], tmp_path)
        lines = _read_artifact(store, metas["samples.jsonl"], tmp_path).splitlines()
        samples = [json.loads(line) for line in lines]
        assert samples == trial.user_attrs["samples"]
        assert len(samples) == 2  # the finished study's samples.count
        assert all(set(s) == {"prompt", "reference", "answer"} and s["prompt"] for s in samples)


def test_write_samples_drops_an_earlier_attempts_file_when_there_are_none(tmp_path):
    assert write_samples(tmp_path, [{"prompt": "p", "reference": "r", "answer": "a"}]) == tmp_path / SAMPLES_FILE
    assert json.loads((tmp_path / SAMPLES_FILE).read_text()) == {"prompt": "p", "reference": "r", "answer": "a"}
    assert write_samples(tmp_path, []) is None
    assert not (tmp_path / SAMPLES_FILE).exists()
