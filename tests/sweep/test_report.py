"""``python -m sweep report``: the HTML report and PNGs of a real finished study, checked in Chromium offline."""

from __future__ import annotations

import html
import re

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from tests.sweep.live_study import sweep_cli, write_study

CHARTS = ("eval_curves", "history", "importances", "slices")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_report_shows_curves_best_configuration_importances_slices_and_samples(finished_study, chromium, tmp_path):
    out = tmp_path / "report"
    done = sweep_cli("report", *finished_study.args(), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(["report.html", *(f"{c}.png" for c in CHARTS)])
    for chart in CHARTS:
        png = (out / f"{chart}.png").read_bytes()
        assert png.startswith(PNG_MAGIC) and len(png) > 10_000

    page = (out / "report.html").read_text()
    study = optuna.load_study(study_name=finished_study.name, storage=finished_study.storage)
    best = study.best_trial
    assert f"Trial <b>#{best.number}</b>, eval loss <b>{best.value:.4f}</b>" in page
    for name, value in best.params.items():
        assert f"<th>{name}</th><td>{value:.4g}</td>" in page
    for sample in best.user_attrs["samples"]:
        assert html.escape(sample["answer"]) in page and html.escape(sample["prompt"]) in page
    assert all(f'id="chart-{chart}"' in page for chart in CHARTS)
    # self-contained: plotly.js inlined, nothing fetched from elsewhere
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page)
    assert "Plotly.newPlot" in page and len(page) > 1_000_000

    dom = chromium((out / "report.html").as_uri(), "--dump-dom", wait_ms=5000)
    for chart in CHARTS:
        drawn = re.search(rf'id="chart-{chart}".*?class="main-svg"', dom, re.S)
        assert drawn, f"chart {chart} was not drawn by plotly"
    chromium((out / "report.html").as_uri(), f"--screenshot={tmp_path / 'report.png'}", "--window-size=1280,3600",
             wait_ms=5000)
    assert (tmp_path / "report.png").stat().st_size > 50_000


def _recorded_study(tmp_path, trials: list[dict]):
    """A study file plus an Optuna study in its default SQLite storage, holding ``trials`` as recorded."""
    path = write_study(tmp_path, "recorded", 1)
    folder = tmp_path / "runs" / "recorded"
    folder.mkdir(parents=True)
    study = optuna.create_study(study_name="recorded", storage=f"sqlite:///{folder / 'study.db'}")
    distributions = {"learning_rate": FloatDistribution(1e-3, 5e-2, log=True)}
    for t in trials:
        study.add_trial(create_trial(state=t["state"], value=t.get("value"), params={"learning_rate": t["lr"]},
                                     distributions=distributions,
                                     user_attrs={"eval_losses": [[4, 6.5], [8, t.get("value") or 6.4]],
                                                 "samples": [{"prompt": "Vad är två plus två?", "reference": "Fyra.",
                                                              "answer": f"answer <{t['lr']}>"}]}))
    return path


@pytest.mark.parametrize("trials, note", [
    ([{"state": TrialState.COMPLETE, "value": 5.0, "lr": 0.01}, {"state": TrialState.FAIL, "lr": 0.02}],
     "parameter importances need at least 2 complete trials; this study has 1"),
    ([{"state": TrialState.COMPLETE, "value": 5.0, "lr": 0.01}, {"state": TrialState.COMPLETE, "value": 5.5, "lr": 0.01}],
     "parameter importances need complete trials whose searched parameters differ; here they are all the same"),
], ids=["one-complete-trial", "same-params"])
def test_report_without_enough_trials_for_importances_says_why(trials, note, tmp_path):
    path = _recorded_study(tmp_path, trials)
    out = tmp_path / "report"
    done = sweep_cli("report", "--study", str(path), "--runs-dir", str(tmp_path / "runs"), "--out", str(out))
    assert done.returncode == 0, done.stderr
    page = (out / "report.html").read_text()
    assert note in page and 'id="chart-importances"' not in page
    assert not (out / "importances.png").exists() and (out / "slices.png").exists()
    assert html.escape("answer <0.01>") in page


def test_report_of_a_study_without_complete_trials_is_a_one_line_error(tmp_path):
    path = _recorded_study(tmp_path, [{"state": TrialState.FAIL, "lr": 0.01}])
    out = tmp_path / "report"
    done = sweep_cli("report", "--study", str(path), "--runs-dir", str(tmp_path / "runs"), "--out", str(out))
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["error: study recorded has no complete trial yet: nothing to report "
                                        "(see `python -m sweep status --study recorded`)"]
    assert not out.exists()


def test_report_out_must_be_a_folder(finished_study, tmp_path):
    taken = tmp_path / "a-file"
    taken.write_text("keep me")
    done = sweep_cli("report", *finished_study.args(), "--out", str(taken))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"error: --out {taken}: is a file, not a folder; "
                                        "give a folder for report.html and the PNGs"]
    assert taken.read_text() == "keep me"
