"""``search.objective``: what a trial scores (last_eval, best_eval, chrf, or several with gpu_seconds).

The schema's rules, each one line; a real multi-objective study of the tiny model whose Pareto front
``status``, ``best``, ``report``, ``export`` and the dashboard show; a changed objective continuing in a
new study version with the values its trials recorded; and a warm start only from the same objective.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from sweep.launch.gpu_slots import SlotPool
from sweep.run.objective import Objective
from sweep.run.progress import ProgressView
from sweep.run.trial_outcome import TrialFailed, conclude
from sweep.schema.objectives import Objectives
from sweep.schema.study_file import load_study
from sweep.study.objective_values import gpu_seconds
from sweep.study.optuna_internals import set_metric_names
from sweep.study.storage import open_study
from sweep.study.study_versions import Identity, settle
from sweep.study.trial_attrs import CONFIG, STUDY_FILE
from tests.sweep.live_study import (
    MINIMAL_STUDY,
    run_sweep,
    sqlite_url,
    status_json,
    study_errors,
    study_trials,
    sweep_cli,
    write_study,
    write_study_text,
)
from tests.sweep.test_trusted_results import edit
from trainer.events import Result
from trainer.trial_folder import ADAPTER_CONFIG_FILE, ADAPTER_SPEC_FILE, ADAPTER_WEIGHTS_FILES

SPACE = {"learning_rate": FloatDistribution(1e-4, 1e-2, log=True), "r": CategoricalDistribution([4, 8])}


def with_search(lines: str, samples: str = "") -> str:
    """The minimal study file with ``lines`` added to its search section (and a samples section)."""
    return MINIMAL_STUDY + "".join(f"  {line.strip()}\n" for line in lines.strip().splitlines()) + samples


@pytest.mark.parametrize("lines, expected", [
    ("objective: chrf", "search.objective chrf scores the trials' sample answers, but samples.count is 0; "
                        "set samples: {count: 8}"),
    ("objective: [best_eval, gpu_seconds]\npruner: {name: median}",
     "search: pruner median with objective ['best_eval', 'gpu_seconds']: Optuna cannot prune a multi-objective "
     "study; give pruner: {name: none} or leave pruner out"),
    ("objective: [best_eval, gpu_seconds]\nsampler: {name: cmaes}",
     "search: sampler cmaes with objective ['best_eval', 'gpu_seconds']: Optuna's cmaes sampler is single-objective; "
     "use one of tpe, random, grid, gp, qmc, nsgaii"),
    ("objective: gpu_seconds", "search.objective: 'gpu_seconds' is not allowed: gpu_seconds alone would find the "
                               "shortest trial"),
    ("objective: [last_eval, best_eval]", "last_eval and best_eval are two readings of one eval loss"),
    ("objective: [chrf, chrf]", "search.objective: ['chrf', 'chrf'] is not allowed: a metric is named twice"),
    ("objective: []", "search.objective: [] is not allowed: give at least one metric: last_eval, best_eval, chrf, "
                      "gpu_seconds"),
    ("objective: eval_loss", "search.objective.0: 'eval_loss' is not allowed: Input should be 'last_eval', "
                             "'best_eval', 'chrf' or 'gpu_seconds'"),
], ids=["chrf-without-samples", "multi-with-pruner", "multi-with-cmaes", "seconds-alone", "two-losses", "twice",
        "empty", "unknown"])
def test_an_objective_that_cannot_work_is_one_line(tmp_path, lines, expected):
    (line,) = study_errors(write_study_text(tmp_path, with_search(lines)))
    assert expected in line


def test_pruning_is_left_out_where_no_pruner_can_act_and_kept_for_a_loss(tmp_path):
    def loaded(lines, samples=""):
        return load_study(str(write_study_text(tmp_path, with_search(lines, samples)))).config.search

    assert loaded("objective: [best_eval, gpu_seconds]").pruner.name == "none"
    assert loaded("objective: chrf", "samples: {count: 2}\n").pruner.name == "none"
    search = loaded("objective: best_eval")
    assert search.pruner.name == "percentile" and search.objective == ["best_eval"]
    assert loaded("sampler: {name: nsgaii, population_size: 4}").objective == ["last_eval"]


def test_chrf_of_text_rows_is_refused_before_the_study_exists(tmp_path):
    runs = tmp_path / "runs"
    study = write_study(tmp_path, "prose", 1, objective="chrf", samples={"count": 2})
    rows = [json.dumps({"text": f"Rad nummer {i} av en text utan svar."}) for i in range(12)]
    (tmp_path / "data" / "train.jsonl").write_text("\n".join(rows) + "\n")
    (tmp_path / "data" / "eval.jsonl").write_text("\n".join(rows[:4]) + "\n")
    done = run_sweep(study, runs)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: {study}: search.objective: chrf scores answers to the eval "
                                                "rows' prompts, and text rows have neither; give chat, sharegpt or "
                                                "alpaca rows, or another objective"]
    assert not (runs / "prose").exists()


def test_a_multi_objective_study_shows_its_pareto_front_everywhere(tmp_path):
    runs = tmp_path / "runs"
    study = write_study(tmp_path, "front", 3, objective=["best_eval", "gpu_seconds"],
                        samples={"count": 2, "max_new_tokens": 8})
    done = run_sweep(study, runs)
    assert done.returncode == 0, done.stdout + done.stderr
    optuna_study = optuna.load_study(study_name="front", storage=sqlite_url(runs, "front"))
    assert [d.name for d in optuna_study.directions] == ["MINIMIZE", "MINIMIZE"]
    assert optuna_study.metric_names == ["best_eval_loss", "gpu_seconds"]
    trials = optuna_study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    for trial in trials:  # each value is the measure it names, of the adapter the trial kept
        attrs = trial.user_attrs
        curve = attrs["eval_losses"]
        assert trial.values == [min(loss for _, loss in curve), attrs["train_seconds"]]
        assert attrs["adapter_eval_loss"] == trial.values[0] and attrs["keep_adapter"] == "best_eval"
        assert [step for step, loss in curve if loss == trial.values[0]][0] == attrs["adapter_step"]
    front = sorted(t.number for t in optuna_study.best_trials)
    assert f"Pareto front of best_eval_loss (minimize), gpu_seconds (minimize): {len(front)} trials" in done.stdout

    records = status_json(str(study), runs)
    assert [r["number"] for r in records if r["pareto_front"]] == front
    assert all(r["values"] == dict(zip(["best_eval_loss", "gpu_seconds"], t.values, strict=True)) and r["value"] is None
               for r, t in zip(records, trials, strict=True))
    table = sweep_cli("status", "--study", str(study), "--runs-dir", str(runs), COLUMNS="250")
    assert "best_eval_loss" in table.stdout and "gpu_seconds" in table.stdout and "* on the Pareto front" in table.stdout

    listed = json.loads(sweep_cli("best", "--study", str(study), "--runs-dir", str(runs), "--json").stdout)
    assert [r["number"] for r in listed] == front and all(r["adapter_on_disk"] for r in listed)
    shown = sweep_cli("best", "--study", str(study), "--runs-dir", str(runs)).stdout
    assert shown.startswith(f"Pareto front of front: {len(front)} trials")
    assert all(f"#{n}  best_eval_loss=" in shown for n in front)

    refused = sweep_cli("export", "--study", str(study), "--runs-dir", str(runs), "--to", str(tmp_path / "out"))
    assert refused.returncode == 2 and "choose one of its Pareto front with --trial N" in refused.stderr
    exported = sweep_cli("export", "--study", str(study), "--runs-dir", str(runs), "--to", str(tmp_path / "out"),
                         "--trial", str(front[0]))
    assert exported.returncode == 0, exported.stderr
    card = (tmp_path / "out" / "README.md").read_text()
    assert f"on the Pareto front ({', '.join(f'#{n}' for n in front)}) of 3 complete trials" in card
    assert f"| best eval loss | {trials[front[0]].values[0]:.4f} |" in card

    report = sweep_cli("report", "--study", str(study), "--runs-dir", str(runs), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "report" / "report.html").read_text()
    assert "<h2>Pareto front</h2>" in page and 'id="chart-pareto_front"' in page
    assert all(f"<tr><td>#{n}</td><td>{trials[n].values[0]:.4f}</td>" in page for n in front)
    assert (tmp_path / "report" / "pareto_front.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "report" / "history-gpu_seconds.png").exists()

    # the dashboard labels the two axes by the study's metric names
    from wsgiref.util import setup_testing_defaults

    import optuna_dashboard

    served = {}
    environ = {"PATH_INFO": f"/api/studies/{optuna_study._study_id}"}
    setup_testing_defaults(environ)
    app = optuna_dashboard.wsgi(optuna.storages.RDBStorage(sqlite_url(runs, "front")))
    body = b"".join(app(environ, lambda status, headers, exc=None: served.update(status=status)))
    shown = json.loads(body)
    assert served["status"] == "200 OK" and shown["objective_names"] == ["best_eval_loss", "gpu_seconds"]
    assert shown["directions"] == ["minimize", "minimize"]

    # scored on chrF instead: a new version, its trials copied with the chrF they measured; nothing trains
    edit(study, lambda c: c["search"].update(objective="chrf"))
    again = run_sweep(study, runs)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "objective changed: continuing in study front@v2 with 3 finished trials of front copied" in again.stdout
    assert "nothing to do" in again.stdout
    copies = study_trials(runs, "front@v2")
    assert [t.value for t in copies] == [t.user_attrs["chrf"] for t in trials]
    best = json.loads(sweep_cli("best", "--study", str(study), "--runs-dir", str(runs), "--json").stdout)
    assert best["values"] == {"chrF": max(t.user_attrs["chrf"] for t in trials)}


def recorded_study(tmp_path, search: str, trials: list[dict], samples: str = "samples: {count: 2}\n",
                   named: bool = True):
    """A study file and its Optuna study in SQLite, as a run leaves them: created with the file's objective
    (its metrics ``named``, as a study made before objectives could be chosen is not), the file recorded, and
    ``trials`` (values and user attributes) finished."""
    path = write_study_text(tmp_path, with_search(search, samples))
    study = load_study(str(path))
    objectives = Objectives(tuple(study.config.search.objective))
    optuna_study = open_study(sqlite_url(tmp_path / "runs", "s"), "s", directions=objectives.directions,
                              metric_names=objectives.labels if named else None)
    optuna_study.set_user_attr(STUDY_FILE, str(study.path))
    optuna_study.set_user_attr(CONFIG, study.config.model_dump(mode="json"))
    for i, t in enumerate(trials):
        optuna_study.add_trial(create_trial(params={"learning_rate": 1e-3 * (i + 1), "r": 8}, distributions=SPACE,
                                            **t))
    return path, optuna_study


def test_a_changed_objective_carries_the_values_each_trial_recorded(tmp_path):
    kept_best = {"keep_adapter": "best_eval", "eval_loss": 3.0, "adapter_eval_loss": 2.5, "chrf": 31.0,
                 "train_seconds": 40.0, "steps": 100, "resumed_from_step": 50}
    path, optuna_study = recorded_study(tmp_path, "objective: [best_eval, gpu_seconds]", [
        {"values": [2.5, 80.0], "user_attrs": kept_best},
        {"values": [2.7, 60.0], "user_attrs": {**kept_best, "chrf": None}},  # answered nothing to score
        {"state": TrialState.PRUNED, "user_attrs": {"keep_adapter": "best_eval"}},
    ])
    path.write_text(path.read_text().replace("[best_eval, gpu_seconds]", "[chrf, gpu_seconds]"))
    said = []
    new = settle(optuna_study, load_study(str(path)), pruner=None, say=said.append)
    assert new.study_name == "s@v2" and new.metric_names == ["chrF", "gpu_seconds"]
    assert [d.name for d in new.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert [(t.state, t.values) for t in new.get_trials(deepcopy=False)] == [
        (TrialState.COMPLETE, [31.0, 80.0]), (TrialState.PRUNED, None)]
    assert said[-1] == ("objective changed: continuing in study s@v2 with 2 finished trials of s copied (1 without "
                        "a value for chrF (maximize), gpu_seconds (minimize) stay in s)")

    # the last eval loss of a trial that kept its best adapter is not that adapter's: nothing to carry
    path.write_text(path.read_text().replace("[chrf, gpu_seconds]", "last_eval"))
    newer = settle(new, load_study(str(path)), pruner=None, say=said.append)
    assert newer.study_name == "s@v3" and newer.metric_names == ["eval_loss"]
    assert [t.state for t in newer.get_trials(deepcopy=False)] == [TrialState.PRUNED]


def test_gpu_seconds_of_a_trial_resumed_halfway_count_its_first_half_at_its_pace():
    assert gpu_seconds({"train_seconds": 40.0, "steps": 100, "resumed_from_step": 50}) == 80.0
    assert gpu_seconds({"train_seconds": 40.0, "steps": 100}) == 40.0
    assert gpu_seconds({"steps": 100}) is None


def test_a_study_recorded_before_objectives_goes_on_unchanged(tmp_path):
    path, optuna_study = recorded_study(tmp_path, "", [{"value": 2.5, "user_attrs": {}}], samples="", named=False)
    recorded = optuna_study.user_attrs[CONFIG]
    legacy = {k: v for k, v in recorded["search"].items() if k != "objective"}
    legacy["sampler"] = {k: v for k, v in legacy["sampler"].items() if k != "population_size"}  # added since
    optuna_study.set_user_attr(CONFIG, {**recorded, "search": {**legacy, "direction": "minimize", "metric": "eval_loss"}})
    said = []
    assert settle(optuna_study, load_study(str(path)), pruner=None, say=said.append) is optuna_study and said == []


def test_a_changed_samples_section_is_refused_where_chrf_is_scored(tmp_path):
    path, optuna_study = recorded_study(tmp_path, "objective: chrf", [{"value": 30.0, "user_attrs": {"chrf": 30.0}}])
    path.write_text(path.read_text().replace("samples: {count: 2}", "samples: {count: 4}"))
    with pytest.raises(Exception, match=r"samples.count: 2 -> 4: changed since the study's trials ran"):
        settle(optuna_study, load_study(str(path)), pruner=None, say=lambda line: None)


def test_a_warm_start_from_a_study_of_another_objective_is_refused_before_the_study_exists(tmp_path):
    runs = tmp_path / "runs"
    (runs / "earlier").mkdir(parents=True)
    source = optuna.create_study(study_name="earlier", storage=sqlite_url(runs, "earlier"))
    set_metric_names(source, ["eval_loss"])
    later = write_study(tmp_path, "later", 1, objective="best_eval")
    edit(later, lambda c: c["search"].update(warm_start={"study": "earlier"}))
    done = run_sweep(later, runs)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert ("search.warm_start.study: 'earlier' is scored on eval_loss (minimize), this study on best_eval_loss "
            "(minimize): a warm start copies the values as they are") in line
    assert not (runs / "later" / "study.db").exists()


def run_one_trial(study, optuna_study, runs: Path) -> None:
    """One trial through the real objective (one CPU slot), as tests/sweep/test_repeats.py runs it."""
    import io

    from rich.console import Console

    objectives = Objectives(tuple(study.config.search.objective))
    with ProgressView("s", 2, {}, None, console=Console(file=io.StringIO()), objectives=objectives) as progress:
        stopping = threading.Event()
        objective = Objective(study, runs, progress, SlotPool({None: 1}, stopping), stopping, Identity("test", 1))
        optuna_study.optimize(objective, n_trials=1)


def test_a_repeat_in_a_multi_objective_study_takes_the_earlier_values(tmp_path):
    study = load_study(str(write_study_text(tmp_path, with_search("objective: [best_eval, gpu_seconds]"))))
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    optuna_study = optuna.create_study(directions=["minimize", "minimize"])
    optuna_study.add_trial(create_trial(params={"learning_rate": 1e-3, "r": 8}, distributions=SPACE, values=[2.5, 9.0]))
    optuna_study.add_trial(create_trial(params={"learning_rate": 2e-3, "r": 8}, distributions=SPACE,
                                        state=TrialState.PRUNED, intermediate_values={1: 7.0}))
    optuna_study.enqueue_trial({"learning_rate": 1e-3, "r": 8})
    optuna_study.enqueue_trial({"learning_rate": 2e-3, "r": 8})
    run_one_trial(study, optuna_study, tmp_path / "runs")
    run_one_trial(study, optuna_study, tmp_path / "runs")
    completed, pruned = optuna_study.trials[2:]
    assert completed.values == [2.5, 9.0] and completed.user_attrs["repeat_of"] == 0
    assert pruned.state == TrialState.PRUNED and pruned.user_attrs["repeat_of"] == 1
    assert not (tmp_path / "runs" / "trials").exists()


def test_a_trial_without_a_value_its_objective_needs_fails_with_the_reason(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    for name in (ADAPTER_CONFIG_FILE, ADAPTER_SPEC_FILE, ADAPTER_WEIGHTS_FILES[0]):
        (adapter / name).write_text("{}")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    trial = optuna.create_study(direction="maximize").ask()
    result = Result(status="ok", eval_loss=2.5, adapter_path=str(adapter), adapter_step=8, adapter_eval_loss=2.5,
                    steps=8, train_seconds=3.0)
    with ProgressView("s", 1, {}, None) as progress, pytest.raises(TrialFailed, match="has no chrF"):
        conclude(trial, result, progress, tmp_path / "s.yaml", Objectives(("chrf",)))
    assert trial.user_attrs["fail_reason"] == "crash: the trainer's result has no chrF"
