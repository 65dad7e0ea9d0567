"""Bad --gpus, --trials-per-gpu and --storage through the real CLI: one line ``error: ...``, a
non-zero exit, and nothing started: no study created, no trial, no runs folder."""

from __future__ import annotations

import subprocess
from pathlib import Path

import optuna
import pytest

from tests.sweep.live_study import fake_nvidia_smi, run_sweep, write_study


def run_cli(study: Path, runs: Path, *args: str, path: str = "/usr/bin:/bin") -> subprocess.CompletedProcess:
    return run_sweep(study, runs, *args, timeout=120, PATH=path)


def assert_refused(done: subprocess.CompletedProcess, runs: Path, *needles: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not runs.exists(), "nothing may be created for a refused run"


@pytest.mark.parametrize(("args", "needles"), [
    (["--gpus", "0"], ["--gpus 0", "no NVIDIA GPU", "nvidia-smi"]),
    (["--gpus", "0,x"], ["--gpus", "'0,x'", "GPU indices"]),
    (["--gpus", "1,1"], ["names a GPU twice"]),
    (["--trials-per-gpu", "0"], ["--trials-per-gpu", "'0'", "at least 1"]),
    (["--trials-per-gpu", "two"], ["--trials-per-gpu", "'two'", "auto"]),
    (["--trials-per-gpu", "auto"], ["--trials-per-gpu auto", "no NVIDIA GPU"]),
])
def test_bad_gpu_options_on_a_host_without_gpus(tmp_path, args, needles):
    study, runs = write_study(tmp_path, "bad-gpus", 1), tmp_path / "runs"
    assert_refused(run_cli(study, runs, *args), runs, *needles)


def test_gpu_index_the_host_does_not_have(tmp_path):
    study, runs = write_study(tmp_path, "no-gpu-7", 1), tmp_path / "runs"
    path = fake_nvidia_smi(tmp_path / "bin", "0, 80000, 81559\\n1, 80000, 81559\\n")
    assert_refused(run_cli(study, runs, "--gpus", "0,7", path=path), runs, "--gpus 0,7", "no GPU 7", "it has 0, 1")


def test_unreachable_storage(tmp_path):
    study, runs = write_study(tmp_path, "unreachable", 1), tmp_path / "runs"
    done = run_cli(study, runs, "--storage", "postgresql://sweep:secret@127.0.0.1:1/sweep")
    assert_refused(done, runs, "--storage postgresql://***@127.0.0.1:1/sweep", "cannot open the study storage")
    assert "secret" not in done.stderr


def test_storage_url_of_no_known_database(tmp_path):
    study, runs = write_study(tmp_path, "bogus-url", 1), tmp_path / "runs"
    assert_refused(run_cli(study, runs, "--storage", "bogus://nowhere"), runs, "--storage bogus://nowhere")


def test_wrong_postgresql_password(tmp_path, postgres_url):
    study, runs = write_study(tmp_path, "wrong-password", 1), tmp_path / "runs"
    wrong = postgres_url.replace("sweep:sweep@", "sweep:not-the-password@")
    done = run_cli(study, runs, "--storage", wrong)
    assert_refused(done, runs, "cannot open the study storage", "password authentication failed")
    assert "not-the-password" not in done.stderr
    assert "wrong-password" not in optuna.get_all_study_names(postgres_url)
