"""Results stay right after what users do between runs: a deleted database, an edited study file,
a second file with the same name. Each case runs real studies of the tiny model."""

from __future__ import annotations

import json

import optuna
import yaml
from optuna.trial import TrialState

from tests.sweep.live_study import run_sweep, run_trainer, sqlite_url, status_json, study_trials, write_study


def edit(study_file, change) -> None:
    content = yaml.safe_load(study_file.read_text())
    change(content)
    study_file.write_text(yaml.safe_dump(content, sort_keys=False))


def test_a_checkpoint_is_resumed_only_by_the_trial_that_wrote_it(tmp_path):
    runs = tmp_path / "runs"
    study = write_study(tmp_path, "bound", 1, execution={"keep_checkpoints": True})
    assert run_sweep(study, runs).returncode == 0
    trial_dir = runs / "bound" / "trials" / "00000"
    assert list((trial_dir / "checkpoints").glob("checkpoint-*"))  # kept, as the study asks

    # the database is gone and the learning rate changed: a new study's trial 0 lands in the same folder
    spec = json.loads((trial_dir / "spec.json").read_text())
    spec.update(study_uid="another-study", training={**spec["training"], "learning_rate": 1e-3})
    (trial_dir / "spec.json").write_text(json.dumps(spec))
    got = run_trainer(trial_dir / "spec.json")
    [setup] = [e for e in got if e["event"] == "setup"]
    assert setup["resumed_from_step"] == 0 and "another study" in setup["resume_note"]

    fresh = tmp_path / "fresh"  # the same spec, trained from scratch in an empty folder
    fresh.mkdir()
    (fresh / "spec.json").write_text(json.dumps({**spec, "output_dir": str(fresh)}))
    expected = run_trainer(fresh / "spec.json")
    assert got[-1]["eval_loss"] == expected[-1]["eval_loss"]
    assert [e["eval_loss"] for e in got if e["event"] == "eval"] == \
           [e["eval_loss"] for e in expected if e["event"] == "eval"]


def test_finished_trials_drop_their_checkpoints_and_keep_their_adapter(tmp_path):
    runs = tmp_path / "runs"
    assert run_sweep(write_study(tmp_path, "tidy", 1), runs).returncode == 0
    trial_dir = runs / "tidy" / "trials" / "00000"
    assert (trial_dir / "adapter" / "adapter_config.json").is_file()
    assert not (trial_dir / "checkpoints").exists()


def test_a_runs_folder_of_a_deleted_database_is_refused_until_started_fresh(tmp_path):
    runs = tmp_path / "runs"
    study = write_study(tmp_path, "gone", 1)
    assert run_sweep(study, runs).returncode == 0
    before = (runs / "gone" / "trials" / "00000" / "adapter" / "adapter_model.safetensors").read_bytes()
    for name in ("study.db", "study.db-wal", "study.db-shm"):
        (runs / "gone" / name).unlink(missing_ok=True)
    edit(study, lambda c: c["search"].update(enqueue=[{"learning_rate": 1e-3, "r": 8}]))

    refused = run_sweep(study, runs)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    [line] = refused.stderr.strip().splitlines()
    assert "trial folder(s) (00000)" in line and "--fresh" in line
    assert not (runs / "gone" / "study.db").exists()  # nothing created
    assert (runs / "gone" / "trials" / "00000" / "adapter" / "adapter_model.safetensors").read_bytes() == before

    fresh = run_sweep(study, runs, "--fresh")
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    [aside] = [p for p in runs.iterdir() if p.name.startswith("gone.old-")]
    assert (aside / "trials" / "00000" / "adapter" / "adapter_model.safetensors").read_bytes() == before
    [trial] = study_trials(runs, "gone")
    assert trial.params["learning_rate"] == 1e-3 and trial.user_attrs["resumed_from_step"] == 0


def test_an_added_choice_continues_in_a_new_version_without_training_again(tmp_path):
    runs = tmp_path / "runs"
    study = write_study(tmp_path, "grow", 2, max_steps=4, eval_points=2)
    assert run_sweep(study, runs).returncode == 0
    first = {t.number: t for t in study_trials(runs, "grow")}

    edit(study, lambda c: (c["search"]["params"].update(r={"choices": [4, 8, 16]}),
                           c["search"].update(n_trials=3)))
    done = run_sweep(study, runs)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "search.params.r.choices: [4, 8] -> [4, 8, 16]" in done.stdout
    assert "continuing in study grow@v2 with 2 finished trials of grow copied" in done.stdout

    trials = study_trials(runs, "grow@v2")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    for copy in trials[:2]:
        original = first[int(copy.user_attrs["copied_from"].split("#")[1])]
        assert (copy.value, copy.params, copy.user_attrs["adapter_path"]) == \
               (original.value, original.params, original.user_attrs["adapter_path"])
        assert copy.distributions["r"] == optuna.distributions.CategoricalDistribution([4, 8, 16])
    assert trials[2].user_attrs["trial_dir"].endswith("trials/v2-00002")  # the only trial trained again

    assert len(status_json(str(study), runs)) == 3  # the commands follow the newest version
    again = run_sweep(study, runs)  # an unchanged file: nothing to do, no version 3
    assert again.returncode == 0 and "nothing to do" in again.stdout and "changed" not in again.stdout


def test_a_changed_model_section_is_refused_and_a_namesake_file_does_not_join(tmp_path):
    runs = tmp_path / "runs"
    study = write_study(tmp_path, "fixed", 1, max_steps=4, eval_points=2)
    assert run_sweep(study, runs).returncode == 0
    before = [(t.number, t.state, t.value) for t in study_trials(runs, "fixed")]

    edit(study, lambda c: c["training"].update(weight_decay=0.1))
    refused = run_sweep(study, runs)
    assert refused.returncode == 2
    [line] = refused.stderr.strip().splitlines()
    assert "training.weight_decay: 0.0 -> 0.1: changed since the study's trials ran" in line and "--fresh" in line

    other = tmp_path / "other"
    other.mkdir()
    namesake = write_study(other, "fixed", 1, max_steps=6, eval_points=2)
    refused = run_sweep(namesake, runs)
    assert refused.returncode == 2
    [line] = refused.stderr.strip().splitlines()
    assert f"'fixed' is already the study of {study.resolve()}" in line and "training.max_steps" in line
    assert [(t.number, t.state, t.value) for t in study_trials(runs, "fixed")] == before
    assert optuna.get_all_study_names(sqlite_url(runs, "fixed")) == ["fixed"]
