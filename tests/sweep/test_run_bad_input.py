"""Bad --gpus, --trials-per-gpu, --storage, --runs-dir, --to and study databases through the real CLI:
one line ``error: ...``, a non-zero exit, and nothing started or changed: no study created, no trial,
no runs folder, a damaged database left byte for byte as it was."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import optuna
import pytest

from tests.sweep.live_study import TINY_MODEL, fake_nvidia_smi, run_sweep, sweep_cli, write_study


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


def one_error_line(done: subprocess.CompletedProcess, *needles: str) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and "Traceback" not in done.stderr
    for needle in needles:
        assert needle in line, line
    return line


def test_runs_dir_under_a_file(tmp_path):
    study, runs = write_study(tmp_path, "under-file", 1), tmp_path / "a-file" / "runs"
    (tmp_path / "a-file").write_text("not a folder\n")
    line = one_error_line(run_cli(study, runs), f"--runs-dir {runs}: {tmp_path / 'a-file'} is a file, not a folder")
    assert "give a folder" in line


def test_runs_dir_that_cannot_be_written(tmp_path):
    """procfs's sysctl folder is read-only even for root (these tests may run as root, where chmod does not bind)."""
    study, runs = write_study(tmp_path, "read-only", 1), Path("/proc/sys/lora-sweep-runs")
    one_error_line(run_cli(study, runs), f"--runs-dir {runs}: /proc/sys cannot be written (read-only, or no permission)")
    assert not runs.exists()


def damaged_database(tmp_path: Path, kind: str, name: str) -> Path:
    """``runs/NAME/study.db`` as a user may find it: empty, cut short, not SQLite, or SQLite of something else."""
    db = tmp_path / "runs" / name / "study.db"
    db.parent.mkdir(parents=True)
    if kind == "empty":
        db.touch()
    elif kind == "not-sqlite":
        db.write_text("name,value\nlr,0.001\n")
    elif kind == "other-sqlite":
        with sqlite3.connect(db) as con:
            con.execute("CREATE TABLE notes (text)")
        con.close()
    else:  # truncated: a real study database, cut in half
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        real = optuna.create_study(study_name=name, storage=f"sqlite:///{db}")
        for i in range(5):
            real.add_trial(optuna.trial.create_trial(params={"x": i / 10}, value=float(i),
                                                     distributions={"x": optuna.distributions.FloatDistribution(0, 1)}))
        del real
        os.truncate(db, db.stat().st_size // 2)
    return db


DAMAGED = {"empty": "is empty (0 bytes), not a study database", "not-sqlite": "is not an SQLite database",
           "truncated": "is damaged or truncated (SQLite: database disk image is malformed)",
           "other-sqlite": "is an SQLite database of something else (its tables: notes)"}


@pytest.mark.parametrize("kind", DAMAGED)
@pytest.mark.parametrize("command", ["run", "status", "best"])
def test_damaged_study_database_is_one_line_and_left_as_it_was(tmp_path, command, kind):
    study = write_study(tmp_path, "damaged", 2)
    db = damaged_database(tmp_path, kind, "damaged")
    before = db.read_bytes()
    done = sweep_cli(command, "--study", str(study), "--runs-dir", str(tmp_path / "runs"))
    line = one_error_line(done, f"error: {db}: {DAMAGED[kind]}")
    assert "--storage" not in line  # the user gave none: the error names the file
    assert db.read_bytes() == before
    assert sorted(p.name for p in db.parent.iterdir()) == ["study.db"]  # no trial folder, no WAL, no lock


@pytest.mark.parametrize("command", ["status", "best"])
def test_reading_an_sqlite_file_without_a_study_writes_no_schema_into_it(tmp_path, command):
    study = write_study(tmp_path, "no-tables", 2)
    db = tmp_path / "runs" / "no-tables" / "study.db"
    db.parent.mkdir(parents=True)
    with sqlite3.connect(db) as con:
        con.execute("PRAGMA user_version = 7")  # a valid SQLite file with no table at all
    con.close()
    before = db.read_bytes()
    one_error_line(sweep_cli(command, "--study", str(study), "--runs-dir", str(tmp_path / "runs")),
                   f"{db}: holds no study yet: run `python -m sweep run --study")
    assert db.read_bytes() == before


def test_status_of_a_study_missing_from_its_database_names_the_file(tmp_path):
    study = write_study(tmp_path, "missing", 2)
    db = tmp_path / "runs" / "missing" / "study.db"
    db.parent.mkdir(parents=True)
    optuna.create_study(study_name="another", storage=f"sqlite:///{db}")
    line = one_error_line(sweep_cli("status", "--study", str(study), "--runs-dir", str(tmp_path / "runs")),
                          f"no study named 'missing' in {db}")
    assert "--storage" not in line


def finished_trial_study(tmp_path: Path, name: str, adapter: Path) -> Path:
    """A real study database holding one COMPLETE trial whose adapter is at ``adapter``."""
    study = write_study(tmp_path, name, 1)
    db = tmp_path / "runs" / name / "study.db"
    db.parent.mkdir(parents=True)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    optuna.create_study(study_name=name, storage=f"sqlite:///{db}").add_trial(optuna.trial.create_trial(
        params={"learning_rate": 0.02}, value=2.5, user_attrs={"adapter_path": str(adapter)},
        distributions={"learning_rate": optuna.distributions.FloatDistribution(1e-3, 5e-2, log=True)}))
    return study


def test_best_says_so_when_the_adapter_folder_is_gone(tmp_path):
    gone = tmp_path / "runs" / "gone" / "trials" / "00000" / "adapter"
    study = finished_trial_study(tmp_path, "gone", gone)
    done = sweep_cli("best", "--study", str(study), "--runs-dir", str(tmp_path / "runs"))
    assert done.returncode == 0, done.stderr
    assert f"adapter: {gone}  (missing: no adapter there any more; was the runs folder moved or cleaned?)" in done.stdout
    done = sweep_cli("best", "--study", str(study), "--runs-dir", str(tmp_path / "runs"), "--json")
    assert '"adapter_on_disk": false' in done.stdout


@pytest.mark.parametrize("command", ["status", "best"])
def test_reading_a_study_needs_neither_its_model_nor_its_data(tmp_path, command):
    """A study database copied where its data and model are not: nothing to refuse about them."""
    study = finished_trial_study(tmp_path, "elsewhere", tmp_path / "adapter")
    shutil.rmtree(tmp_path / "data")
    study.write_text(study.read_text().replace(str(TINY_MODEL), "org/not-cached"))
    done = sweep_cli(command, "--study", str(study), "--runs-dir", str(tmp_path / "runs"))
    assert done.returncode == 0, done.stderr
    assert "2.5" in done.stdout


def test_export_to_a_path_under_a_file(tmp_path):
    study = finished_trial_study(tmp_path, "export-under-file", tmp_path / "adapter")
    (tmp_path / "a-file").write_text("x\n")
    to = tmp_path / "a-file" / "out"
    done = sweep_cli("export", "--study", str(study), "--runs-dir", str(tmp_path / "runs"), "--to", str(to))
    one_error_line(done, f"--to {to}: {tmp_path / 'a-file'} is a file, not a folder")
