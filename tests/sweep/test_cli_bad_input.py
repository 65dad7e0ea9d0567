"""Bad input through the real CLI: one line per problem, exit 2, no traceback, the study untouched."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

from tests.sweep.live_study import STUDIES, sweep_cli


def demo_copy(tmp_path: Path, edit=lambda text: text) -> Path:
    """The demo study with absolute paths, edited."""
    text = (STUDIES / "demo.yaml").read_text()
    text = text.replace("models/tiny-llama", str(STUDIES / "models/tiny-llama"))
    text = text.replace("data/demo/", str(STUDIES / "data/demo") + "/")
    path = tmp_path / "study.yaml"
    path.write_text(edit(text))
    return path


def assert_user_error(done, *needles: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines and all(line.startswith("error: ") for line in lines), done.stderr
    for needle in needles:
        assert needle in done.stderr, done.stderr


def test_unknown_key_exits_2_with_one_line_and_creates_nothing(tmp_path):
    study = demo_copy(tmp_path, lambda t: t.replace("weight_decay:", "weight_decay_rate:"))
    runs = tmp_path / "runs"
    done = sweep_cli("run", "--study", str(study), "--runs-dir", str(runs))
    assert_user_error(done, str(study), "training.weight_decay_rate: unknown key")
    assert len(done.stderr.strip().splitlines()) == 1
    assert not runs.exists()


def test_verbose_shows_the_traceback(tmp_path):
    study = demo_copy(tmp_path, lambda t: t.replace("weight_decay:", "weight_decay_rate:"))
    done = sweep_cli("-v", "run", "--study", str(study), "--runs-dir", str(tmp_path / "runs"))
    assert done.returncode != 0 and "Traceback" in done.stderr


def test_rows_in_no_known_format(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "Hej?", "answer": "Hej!"}) + "\n")
    study = demo_copy(tmp_path, lambda t: t.replace(str(STUDIES / "data/demo/train.jsonl"), str(bad)))
    done = sweep_cli("run", "--study", str(study), "--runs-dir", str(tmp_path / "runs"))
    assert_user_error(done, "data", "row 1 is in none of the formats", "['answer', 'question']")


def test_empty_eval_split(tmp_path):
    study = demo_copy(tmp_path, lambda t: t.replace(f"eval: {STUDIES / 'data/demo/eval.jsonl'}", "eval_fraction: 0.001"))
    done = sweep_cli("run", "--study", str(study), "--runs-dir", str(tmp_path / "runs"))
    assert_user_error(done, "data.eval_fraction: 0.001 of 400 rows leaves an empty eval set")


def test_missing_model_folder(tmp_path):
    study = demo_copy(tmp_path, lambda t: t.replace(str(STUDIES / "models/tiny-llama"), str(tmp_path / "nope")))
    done = sweep_cli("run", "--study", str(study), "--runs-dir", str(tmp_path / "runs"))
    assert_user_error(done, "model.name_or_path", "nope", "config.json")


def test_status_of_a_study_never_run(tmp_path):
    done = sweep_cli("status", "--study", "demo", "--runs-dir", str(tmp_path / "runs"))
    assert_user_error(done, "no study database", "python -m sweep run --study demo")


def test_bad_input_after_a_run_leaves_the_database_untouched(tmp_path, demo_run):
    runs = tmp_path / "runs"
    shutil.copytree(demo_run, runs)
    db = runs / "demo" / "study.db"
    before = _trials(db)
    study = demo_copy(tmp_path, lambda t: t.replace("n_trials: 6", "n_trials: -1").replace("\ndescription", "\nname: demo\ndescription"))
    done = sweep_cli("run", "--study", str(study), "--runs-dir", str(runs))
    assert_user_error(done, "search.n_trials", "-1")
    assert _trials(db) == before


def _trials(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute("select number, state from trials order by number").fetchall()
