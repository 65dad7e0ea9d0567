"""``training.report_to``: real trials logging to TensorBoard, MLflow's local store and W&B (offline), read back
with each tracker's own reader; and the study-file checks of the trackers' names and packages."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import yaml

from tests.sweep.live_study import events, run_sweep, study_trials, write_study
from trainer.spec import TRACKERS, TrainingFixed

PARAMS = ("learning_rate", "num_train_epochs", "r", "lora_alpha", "use_rslora")


def tracked_study(folder: Path, name: str, report_to) -> Path:
    """Two trials of 6 steps, evaluated at steps 3 and 6, reporting to ``report_to``."""
    path = write_study(folder, name, 2, max_steps=6, eval_points=2)
    raw = yaml.safe_load(path.read_text())
    raw["training"]["report_to"] = report_to
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_tracker_names_are_the_ones_transformers_knows():
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    from sweep.checks.trackers import PACKAGES

    assert set(TRACKERS) == set(INTEGRATION_TO_CALLBACK)
    assert set(PACKAGES) | {"kubeflow"} == set(TRACKERS)


def test_report_to_takes_a_name_a_list_or_none():
    assert TrainingFixed(report_to="tensorboard").report_to == ["tensorboard"]
    assert TrainingFixed(report_to=["mlflow", "wandb", "mlflow"]).report_to == ["mlflow", "wandb"]
    assert TrainingFixed(report_to="none").report_to == []
    assert TrainingFixed().report_to == []


def test_an_unknown_tracker_is_one_line_and_starts_nothing(tmp_path):
    study = tracked_study(tmp_path, "typo", ["tensorbord"])
    done = run_sweep(study, tmp_path / "runs")
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "training.report_to.0: 'tensorbord' is not allowed" in done.stderr and "'tensorboard'" in done.stderr
    assert not (tmp_path / "runs").exists()


def test_a_tracker_that_is_not_installed_is_one_line_and_starts_nothing(tmp_path):
    pytest.importorskip("tensorboard")
    study = tracked_study(tmp_path, "absent", ["tensorboard", "neptune"])
    done = run_sweep(study, tmp_path / "runs")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (f"error: {study}: training.report_to: 'neptune' needs the Python package neptune, "
                                   "which is not installed here")
    assert not (tmp_path / "runs").exists()


def test_each_trial_is_a_run_in_tensorboard_mlflow_and_wandb(tmp_path, monkeypatch):
    import mlflow
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "WANDB_PROJECT", "WANDB_RUN_GROUP", "WANDB_DIR"):
        monkeypatch.delenv(name, raising=False)  # the defaults are under test
    study = tracked_study(tmp_path, "tracked", ["tensorboard", "mlflow", "wandb"])
    runs = tmp_path / "runs"
    # both trials run in one warm worker: each must still get runs of its own
    done = run_sweep(study, runs, WANDB_MODE="offline")
    assert done.returncode == 0, done.stdout + done.stderr
    folder = runs / "tracked"
    trials = {t["trial"]: t for t in _optuna_trials(folder)}
    assert sorted(trials) == [0, 1]

    for number, trial in trials.items():
        board = EventAccumulator(str(folder / "tensorboard" / f"trial-{number}"))
        board.Reload()
        assert [(e.step, e.value) for e in board.Scalars("eval/loss")] == trial["evals"]
        assert "train/loss" in board.Tags()["scalars"]
        assert _tensorboard_hparams(board) == {**trial["params"], "study": "tracked", "trial": number}

    client = mlflow.MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tracked")
    found = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(found) == ["tracked/trial-0", "tracked/trial-1"]
    for number, trial in trials.items():
        run = found[f"tracked/trial-{number}"]
        assert run.info.status == "FINISHED"
        assert run.data.tags["study"] == "tracked" and run.data.tags["trial"] == str(number)
        assert {k: run.data.tags[k] for k in PARAMS} == {k: str(v) for k, v in trial["params"].items()}
        assert run.data.params["sweep/r"] == str(trial["params"]["r"])
        history = client.get_metric_history(run.info.run_id, "eval_loss")
        assert [(m.step, m.value) for m in history] == trial["evals"]

    offline = sorted((folder / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(offline) == 2, offline
    seen = {}
    for path in offline:
        run = _wandb_run(path)
        seen[run["name"]] = run
        number = int(run["name"].rsplit("-", 1)[1])
        assert (run["project"], run["group"], run["tags"]) == ("tracked", "tracked", ["tracked"])
        assert {k: run["config"][k] for k in PARAMS} == trials[number]["params"]
        assert run["evals"] == trials[number]["evals"] and run["exit_code"] == 0
    assert sorted(seen) == ["tracked/trial-0", "tracked/trial-1"]


def _optuna_trials(folder: Path) -> list[dict]:
    out = []
    for t in study_trials(folder.parent, "tracked"):
        trial_dir = Path(t.user_attrs["trial_dir"])
        params = json.loads((trial_dir / "spec.json").read_text())["params"]
        evals = [(e["step"], e["eval_loss"]) for e in events(trial_dir) if e["event"] == "eval"]
        assert [value for _, value in evals] == list(t.intermediate_values.values())
        out.append({"trial": t.number, "params": params, "evals": evals})
    return out


def _tensorboard_hparams(board) -> dict:
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = board.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    out = {}
    for key, value in hparams.items():
        kind = value.WhichOneof("kind")
        out[key] = getattr(value, kind)
    return out


def _wandb_run(path: Path) -> dict:
    """Name, project, group, tags, config, eval losses and exit code of an offline W&B run, from its .wandb file."""
    from wandb.proto import wandb_internal_pb2 as pb

    run = {"evals": [], "exit_code": None}
    for record in _wandb_records(path, pb.Record):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.update(name=r.display_name, project=r.project, group=r.run_group, tags=list(r.tags),
                       config={i.key: json.loads(i.value_json) for i in r.config.update})
        elif kind == "history":
            items = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item}
            if "eval/loss" in items:
                run["evals"].append((items["train/global_step"], items["eval/loss"]))
        elif kind == "exit":
            run["exit_code"] = record.exit.exit_code
    return run


def _wandb_records(path: Path, record_type):
    """The protobuf records of a ``.wandb`` file: W&B's header, then LevelDB's log format (32 KiB blocks of
    chunks, each with a 7-byte header: checksum, length, type; full=1, first=2, middle=3, last=4)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if left < 7 or (kind == 0 and length == 0):  # the block's tail is padding
            pos += left
            continue
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = record_type()
            record.ParseFromString(pending)
            pending = b""
            yield record
