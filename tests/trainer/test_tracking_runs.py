"""trainer.tracking on its own: trials that start at once share a new MLflow store, and finish() leaves no trace."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from trainer.spec import TrialSpec

ROOT = Path(__file__).resolve().parents[2]
STARTS = 3


def spec_file(folder: Path, number: int, report_to: list[str]) -> Path:
    spec = TrialSpec.model_validate({
        "study": "together", "trial_number": number, "params": {"r": 8, "learning_rate": 0.01},
        "model": {"name_or_path": str(ROOT / "studies" / "models" / "tiny-llama")},
        "data": {"train": "train.jsonl", "eval_fraction": 0.1},
        "lora": {"r": 8, "lora_alpha": 16}, "training": {"learning_rate": 0.01, "num_train_epochs": 1,
                                                         "report_to": report_to},
        "output_dir": str(folder / "trials" / f"{number:05d}"), "study_dir": str(folder),
    })
    path = folder / f"spec-{number}.json"
    spec.write(path)
    return path


def test_trials_starting_at_once_share_a_new_mlflow_store(tmp_path):
    import mlflow

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    script = ("import sys; from trainer import tracking; from trainer.spec import TrialSpec; "
              "tracking.start(TrialSpec.read(sys.argv[1])); tracking.finish('ok')")
    starts = [subprocess.Popen([sys.executable, "-c", script, str(spec_file(tmp_path, n, ["mlflow"]))], cwd=ROOT,
                               env={**env, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True) for n in range(STARTS)]
    for process in starts:
        output = process.communicate(timeout=300)[0]
        assert process.returncode == 0, output
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("together").experiment_id])
    assert sorted(r.info.run_name for r in runs) == [f"together/trial-{n}" for n in range(STARTS)]
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_finish_puts_the_environment_back(tmp_path, monkeypatch):
    from trainer import tracking

    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", "/elsewhere")
    spec = TrialSpec.read(spec_file(tmp_path, 4, ["tensorboard"]))
    tracking.start(spec)
    assert os.environ["TENSORBOARD_LOGGING_DIR"] == str(tmp_path / "tensorboard" / "trial-4")
    assert list((tmp_path / "tensorboard" / "trial-4").glob("events.out.tfevents.*"))
    tracking.finish("stopped")
    assert os.environ["TENSORBOARD_LOGGING_DIR"] == "/elsewhere"
    tracking.finish("ok")  # nothing started: nothing to end
    assert os.environ["TENSORBOARD_LOGGING_DIR"] == "/elsewhere"
