"""The lora:/training: settings searched as Optuna parameters: dropout, module presets, warm-up, schedule,
weight decay and the batch. Each schema rule is one line naming file, key, value and what is allowed; the
sampled values reach the trial's spec, its adapter and its trainer; study versions, warm start, the grid
sampler and repeat detection handle them like the five essentials."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest

from sweep.launch.memory_estimate import estimate_trial_gib
from sweep.run.repeats import earlier_trial
from sweep.schema.samplers import grid_of
from sweep.schema.study_file import load_study
from sweep.study.study_versions import settle
from sweep.study.trial_attrs import CONFIG, STUDY_FILE
from sweep.study.warm_start import warm_start
from tests.sweep.live_study import (
    MINIMAL_STUDY,
    events,
    run_sweep,
    status_json,
    study_errors,
    sweep_cli,
    write_study,
    write_study_text,
)
from tests.sweep.test_samplers import sample_study
from tests.sweep.test_trusted_results import edit

FIXED_LR = MINIMAL_STUDY.replace("learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}", "learning_rate: 1.0e-3")


def one_error(tmp_path, params: str = "", sections: str = "", enqueue: str = "") -> str:
    """The one error line of MINIMAL_STUDY with ``params`` added to search.params and ``sections`` at the top level."""
    text = MINIMAL_STUDY + params + (f"  enqueue:\n{enqueue}" if enqueue else "") + sections
    (line,) = study_errors(write_study_text(tmp_path, text))
    return line


def loaded(folder: Path, params: str, sections: str = "", base: str = MINIMAL_STUDY):
    """The study file ``base`` with ``params`` added to search.params and ``sections`` at the top level, loaded."""
    return load_study(str(write_study_text(folder, base + params + sections)))


def test_a_setting_searched_and_fixed_in_its_section_is_one_error(tmp_path):
    line = one_error(tmp_path, "    lora_dropout: {choices: [0.0, 0.1]}\n", "lora: {lora_dropout: 0.05}\n")
    assert "search.params.lora_dropout and lora.lora_dropout: lora_dropout is searched and also fixed (0.05)" in line
    line = one_error(tmp_path, "    lr_scheduler_type: {choices: [linear, cosine]}\n", "training: {lr_scheduler_type: cosine}\n")
    assert "search.params.lr_scheduler_type and training.lr_scheduler_type" in line and "'cosine'" in line


def test_a_fixed_value_of_a_section_setting_belongs_in_its_section(tmp_path):
    line = one_error(tmp_path, "    weight_decay: 0.1\n")
    assert "search.params.weight_decay: 0.1 is not allowed: a fixed weight_decay belongs in training: " \
           "(weight_decay: 0.1)" in line and "{choices: [...]}" in line


@pytest.mark.parametrize(("params", "key", "shown", "limit"), [
    ("lora_dropout: {choices: [0.0, 1.0]}", "lora_dropout.choices", "[0.0, 1.0]", "less than 1, the trainer's limit (1.0 is not)"),
    ("warmup_ratio: {low: 0.0, high: 1.5}", "warmup_ratio.high", "1.5", "less than 1, the trainer's limit"),
    ("weight_decay: {low: -0.1, high: 0.1}", "weight_decay.low", "-0.1", "greater than or equal to 0, the trainer's limit"),
    ("per_device_train_batch_size: {choices: [0, 8]}", "per_device_train_batch_size.choices", "[0, 8]", "greater than or equal to 1, the trainer's limit (0 is not)"),
])
def test_values_outside_the_trainers_limits_are_named(tmp_path, params, key, shown, limit):
    line = one_error(tmp_path, f"    {params}\n")
    assert f"search.params.{key}: {shown} is not allowed:" in line and limit in line


def test_a_schedule_the_trainer_lacks_lists_the_ones_it_has(tmp_path):
    line = one_error(tmp_path, "    lr_scheduler_type: {choices: [cosine, cosine_restarts]}\n")
    assert "search.params.lr_scheduler_type.choices: ['cosine', 'cosine_restarts'] is not allowed" in line
    assert "'linear', 'cosine', 'constant' or 'constant_with_warmup'" in line and "('cosine_restarts' is not)" in line


def test_an_unknown_preset_is_one_line_listing_the_presets(tmp_path):
    line = one_error(tmp_path, "    target_modules: {choices: [atention, all_linear]}\n")
    assert "search.params.target_modules.choices: ['atention', 'all_linear'] is not allowed: 'atention' is not a " \
           "preset (did you mean 'attention'?); presets: attention, mlp, all_linear" in line
    line = one_error(tmp_path, "    target_modules: {choices: [qv], presets: {attention: [q_proj]}}\n")
    assert "search.params.target_modules.presets" in line and "'attention' is a built-in preset" in line


def test_typos_in_the_new_keys_get_a_suggestion(tmp_path):
    line = one_error(tmp_path, "    lora_dropot: {choices: [0.0, 0.1]}\n")
    assert "search.params.lora_dropot: unknown key (did you mean 'lora_dropout'?)" in line and "effective_batch_size" in line
    line = one_error(tmp_path, "    warmup_ratio: {choises: [0.0, 0.1]}\n")
    assert "search.params.warmup_ratio.choises: unknown key (did you mean 'choices'?); allowed: value, low, high" in line


def test_the_effective_batch_splits_by_the_largest_micro_batch_or_is_refused(tmp_path):
    line = one_error(tmp_path, "    effective_batch_size: {choices: [8, 24]}\n", "training: {per_device_train_batch_size: 16}\n")
    assert "search.params.effective_batch_size: effective_batch_size 24 is larger than the micro-batch 16 " \
           "(training.per_device_train_batch_size) but not a multiple of it" in line
    line = one_error(tmp_path, "    effective_batch_size: {choices: [8, 16]}\n    gradient_accumulation_steps: {choices: [1, 2]}\n")
    assert "search.params: give effective_batch_size or gradient_accumulation_steps, not both" in line
    line = one_error(tmp_path, "    effective_batch_size: {choices: [8, 16]}\n", "training: {gradient_accumulation_steps: 2}\n")
    assert "search.params.effective_batch_size and training.gradient_accumulation_steps" in line


def test_enqueue_names_only_what_the_space_searches(tmp_path):
    line = one_error(tmp_path, enqueue="    - {r: 8, lora_dropout: 0.1}\n")
    assert "enqueue[0]: lora_dropout is not searched in this study (it is fixed in lora:)" in line
    line = one_error(tmp_path, "    target_modules: {choices: [attention]}\n", enqueue="    - {r: 8, target_modules: mlp}\n")
    assert "enqueue[0]: target_modules='mlp' is outside the search space" in line


def test_sampled_settings_become_the_trials_lora_and_training_sections(tmp_path):
    study = loaded(tmp_path, "    lora_dropout: {choices: [0.0, 0.1]}\n"
                             "    target_modules: {choices: [qv, all_linear], presets: {qv: [q_proj, v_proj]}}\n"
                             "    lr_scheduler_type: {choices: [linear, cosine]}\n"
                             "    warmup_ratio: {low: 0.0, high: 0.2}\n"
                             "    effective_batch_size: {choices: [4, 16, 32]}\n",
                   "training: {per_device_train_batch_size: 16, weight_decay: 0.0}\n")
    space = study.config.space
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    optuna_study = optuna.create_study()
    wanted = [({"r": 8, "lora_dropout": 0.1, "target_modules": "qv", "lr_scheduler_type": "cosine", "warmup_ratio": 0.1,
                "effective_batch_size": 4}, ["q_proj", "v_proj"], (4, 1)),
              ({"r": 4, "lora_dropout": 0.0, "target_modules": "all_linear", "lr_scheduler_type": "linear",
                "warmup_ratio": 0.0, "effective_batch_size": 32}, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                                   "up_proj", "down_proj"], (16, 2))]
    for entry, modules, batch in wanted:
        optuna_study.enqueue_trial(study.config.search.params.to_optuna_params(entry))
        trial = optuna_study.ask()
        lora, training = space.sections(study.config.search.params.sample(trial))
        assert trial.params == {**entry, "learning_rate": trial.params["learning_rate"]}
        assert (lora.r, lora.lora_dropout, lora.target_modules) == (entry["r"], entry["lora_dropout"], modules)
        assert (training.lr_scheduler_type, training.warmup_ratio) == (entry["lr_scheduler_type"], entry["warmup_ratio"])
        assert (training.per_device_train_batch_size, training.gradient_accumulation_steps) == batch
        assert training.weight_decay == 0.0  # still the fixed one


def test_the_grid_covers_the_new_choices(tmp_path):
    space = loaded(tmp_path, "    target_modules: {choices: [attention, mlp]}\n"
                             "    lr_scheduler_type: {choices: [linear, cosine]}\n"
                             "    effective_batch_size: {choices: [8, 16]}\n  sampler: {name: grid}\n",
                   base=FIXED_LR).config.search.params
    assert grid_of(space) == {"r": [4, 8], "target_modules": ["attention", "mlp"],
                              "lr_scheduler_type": ["linear", "cosine"], "effective_batch_size": [8, 16]}
    sampled = sample_study("grid", 0, space, n_trials=16)
    assert len({(v["r"], v["target_modules"], v["lr_scheduler_type"], v["effective_batch_size"]) for v in sampled}) == 16
    (line,) = study_errors(write_study_text(tmp_path, FIXED_LR + "    warmup_ratio: {low: 0.0, high: 0.2}\n"
                                                                 "  sampler: {name: grid}\n"))
    assert "sampler grid: the grid sampler needs choices for warmup_ratio, not a continuous range" in line


def test_a_trial_that_differs_only_in_a_new_setting_is_not_a_repeat(tmp_path):
    space = loaded(tmp_path, "    target_modules: {choices: [attention, all_linear]}\n", base=FIXED_LR).config.search.params
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    optuna_study = optuna.create_study()
    for preset in ("attention", "all_linear", "attention"):
        optuna_study.enqueue_trial({"r": 8, "target_modules": preset})
        trial = optuna_study.ask()
        space.sample(trial)
        earlier = earlier_trial(trial)
        optuna_study.tell(trial, 1.0 + trial.number)
        assert (earlier.number if earlier else None) == (0 if trial.number == 2 else None)


def test_the_memory_estimate_takes_the_largest_micro_batch_and_the_widest_preset(tmp_path):
    def estimate(params, sections=""):
        return estimate_trial_gib(loaded(tmp_path, params, sections), backend="transformers")

    fixed = estimate("", "training: {per_device_train_batch_size: 8}\nlora: {target_modules: [q_proj]}\n")
    assert estimate("    per_device_train_batch_size: {choices: [4, 32]}\n", "lora: {target_modules: [q_proj]}\n") > fixed
    assert estimate("    target_modules: {choices: [attention, all_linear]}\n",
                    "training: {per_device_train_batch_size: 8}\n") > fixed


def recorded_study(tmp_path, text: str, entries: list[dict]):
    """A real SQLite study of the study file ``text`` that finished one trial per entry, as a run records it."""
    study = loaded(tmp_path, "", base=text)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    optuna_study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="s")
    optuna_study.set_user_attr(STUDY_FILE, str(study.path))
    optuna_study.set_user_attr(CONFIG, study.config.model_dump(mode="json"))
    for value, entry in enumerate(entries):
        optuna_study.enqueue_trial(study.config.search.params.to_optuna_params(entry))
        trial = optuna_study.ask()
        study.config.search.params.sample(trial)
        optuna_study.tell(trial, float(value))
    return optuna_study


def new_version(tmp_path, optuna_study, text: str) -> tuple[list, list[str]]:
    """The trials of the study version that a run of the edited file ``text`` continues in, and what it said."""
    said = []
    settled = settle(optuna_study, loaded(tmp_path, "", base=text), None, said.append)
    assert settled.study_name == "s@v2", said
    return settled.get_trials(deepcopy=False), said


DROPOUT_FIXED = FIXED_LR + "lora: {lora_dropout: 0.1}\n"
DROPOUT_SEARCHED = FIXED_LR + "    lora_dropout: {choices: [0.0, 0.1]}\n"


@pytest.mark.parametrize(("old", "entries", "new", "copied"), [
    (DROPOUT_FIXED, [{"r": 4}, {"r": 8}], DROPOUT_SEARCHED, [(4, 0.1), (8, 0.1)]),  # fixed -> searched: all inside
    (DROPOUT_FIXED, [{"r": 4}], FIXED_LR + "    lora_dropout: {choices: [0.0, 0.2]}\n", []),
    (DROPOUT_SEARCHED, [{"r": 4, "lora_dropout": 0.0}, {"r": 8, "lora_dropout": 0.1}], DROPOUT_FIXED, [(8, None)]),
])
def test_moving_a_setting_between_its_section_and_the_search_is_a_new_version(tmp_path, old, entries, new, copied):
    optuna_study = recorded_study(tmp_path, old, entries)
    trials, said = new_version(tmp_path, optuna_study, new)
    assert [(t.params["r"], t.params.get("lora_dropout")) for t in trials] == copied
    assert any("lora.lora_dropout" in line for line in said)


def test_a_copied_trial_keeps_its_micro_batch_split(tmp_path):
    old = FIXED_LR + "    effective_batch_size: {choices: [8, 32]}\ntraining: {per_device_train_batch_size: 16}\n"
    optuna_study = recorded_study(tmp_path, old, [{"r": 4, "effective_batch_size": 8}, {"r": 4, "effective_batch_size": 32}])
    # a smaller largest micro-batch: 8 still runs as 8 x 1, 32 would run as 8 x 4 instead of 16 x 2
    trials, _ = new_version(tmp_path, optuna_study, old.replace("per_device_train_batch_size: 16", "per_device_train_batch_size: 8"))
    assert [t.params["effective_batch_size"] for t in trials] == [8]


def test_a_warm_start_copies_trials_whose_fixed_modules_are_a_searched_preset(tmp_path):
    earlier = FIXED_LR + "lora: {target_modules: [v_proj, q_proj, k_proj, o_proj]}\n"
    recorded_study(tmp_path, earlier, [{"r": 4}, {"r": 8}])
    later = FIXED_LR + (f"    target_modules: {{choices: [attention, mlp]}}\n"
                        f"  warm_start: {{study: s, storage: 'sqlite:///{tmp_path / 'study.db'}'}}\n")
    (tmp_path / "later").mkdir()
    optuna_study, said = optuna.create_study(), []
    warm_start(optuna_study, loaded(tmp_path / "later", "", base=later), tmp_path, None, said.append)
    assert [(t.params["r"], t.params["target_modules"]) for t in optuna_study.trials] == [(4, "attention"), (8, "attention")]
    assert "lora.target_modules" not in said[0]  # part of the space, not a setting that differs


def expected_learning_rates(name: str, peak: float, warmup_ratio: float, total: int) -> list[float]:
    """The learning rate at each step of ``total`` under transformers' schedule ``name``."""
    import torch
    from transformers import get_scheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=math.ceil(warmup_ratio * total),
                              num_training_steps=total)
    rates = []
    for _ in range(total):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return rates


def test_a_real_study_trains_each_trial_with_its_sampled_settings(tmp_path):
    """Two trials of the tiny model (one epoch of 96 rows each), their settings enqueued so both are known."""
    runs = tmp_path / "runs"
    first = {"learning_rate": 2e-2, "r": 8, "lora_dropout": 0.1, "target_modules": "attention",
             "effective_batch_size": 8, "lr_scheduler_type": "cosine", "warmup_ratio": 0.25, "weight_decay": 0.05}
    second = {"learning_rate": 2e-2, "r": 4, "lora_dropout": 0.0, "target_modules": "all_linear",
              "effective_batch_size": 32, "lr_scheduler_type": "linear", "warmup_ratio": 0.0, "weight_decay": 0.0}
    study = write_study(tmp_path, "wider", 2, eval_points=2, enqueue=[first, second])

    def search_more(c):
        del c["training"]["max_steps"], c["training"]["weight_decay"]  # one epoch; weight decay is searched
        c["training"]["per_device_train_batch_size"] = 16  # the largest micro-batch
        c["search"]["params"].update(
            lora_dropout={"choices": [0.0, 0.1]}, target_modules={"choices": ["attention", "all_linear"]},
            effective_batch_size={"choices": [8, 32]}, lr_scheduler_type={"choices": ["linear", "cosine"]},
            warmup_ratio={"low": 0.0, "high": 0.3}, weight_decay={"choices": [0.0, 0.05]})

    edit(study, search_more)
    done = run_sweep(study, runs)
    assert done.returncode == 0, done.stdout + done.stderr

    trials = status_json(str(study), runs)
    assert [t["state"] for t in trials] == ["COMPLETE", "COMPLETE"]
    for trial, entry, modules, batch, steps in ((trials[0], first, {"q_proj", "k_proj", "v_proj", "o_proj"}, (8, 1), 12),
                                                (trials[1], second, {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                                     "up_proj", "down_proj"}, (16, 2), 3)):
        assert trial["params"] == entry  # what the dashboard, status, report and best show
        folder = Path(trial["user_attrs"]["trial_dir"])
        spec = json.loads((folder / "spec.json").read_text())
        assert spec["params"] == {**entry, "num_train_epochs": 1, "lora_alpha": 16.0, "use_rslora": False}
        assert (spec["lora"]["lora_dropout"], set(spec["lora"]["target_modules"])) == (entry["lora_dropout"], modules)
        t = spec["training"]
        assert (t["per_device_train_batch_size"], t["gradient_accumulation_steps"]) == batch
        assert (t["lr_scheduler_type"], t["warmup_ratio"], t["weight_decay"]) == \
               (entry["lr_scheduler_type"], entry["warmup_ratio"], entry["weight_decay"])
        adapter = json.loads((Path(trial["user_attrs"]["adapter_path"]) / "adapter_config.json").read_text())
        assert (adapter["r"], adapter["lora_dropout"], set(adapter["target_modules"])) == \
               (entry["r"], entry["lora_dropout"], modules)
        got = events(folder)
        [setup] = [e for e in got if e["event"] == "setup"]
        assert setup["total_steps"] == steps == 96 // (batch[0] * batch[1])  # the trainer's effective batch
        rates = [e["learning_rate"] for e in got if e["event"] == "progress"]
        assert len(rates) == steps
        if entry["warmup_ratio"]:  # the sampled schedule and warm-up, step by step (0 warms up for warmup_steps)
            assert rates == pytest.approx(expected_learning_rates("cosine", 2e-2, 0.25, steps))
            assert rates != pytest.approx(expected_learning_rates("linear", 2e-2, 0.25, steps))

    best = sweep_cli("best", "--study", str(study), "--runs-dir", str(runs))
    assert best.returncode == 0 and "  target_modules: " in best.stdout and "  effective_batch_size: " in best.stdout
