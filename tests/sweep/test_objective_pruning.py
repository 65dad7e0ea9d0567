"""Pruning for real: the tiny model, `python -m sweep run`, a trial that learns and one that cannot.

Trial 0 (lr 1.6e-2, 1 epoch) finishes; trial 1 (lr 1e-5, 2 epochs) is still at the base model's loss
at its first eval point, so the median pruner (one startup trial, no warm-up) stops it there.
Checks that the pruned trainer stopped at once and cleanly, that its partial history is kept, and
that what Optuna compared was eval point 1 of each trial (step 5 of 20 against step 10 of 40).
"""

from __future__ import annotations

import optuna

from tests.sweep.live_study import STUDIES, TINY_MODEL, sweep_cli
from trainer.events import Result, read_all
from trainer.trial_folder import ADAPTER_DIR, EVENTS_FILE, STOP_FILE

STUDY = f"""
model: {{name_or_path: {TINY_MODEL}, max_seq_length: 128, load_in_4bit: false, chat_template: llama-3,
        dtype: float32}}
data: {{train: {STUDIES / 'data/grid-tiny/train.jsonl'}, eval: {STUDIES / 'data/grid-tiny/eval.jsonl'}}}
training: {{per_device_train_batch_size: 8, per_device_eval_batch_size: 32, warmup_steps: 2, optim: adamw_torch,
           eval_points: 4}}
search:
  n_trials: 2
  params:
    learning_rate: {{choices: [1.0e-5, 1.6e-2]}}
    num_train_epochs: {{choices: [1, 2]}}
    r: 8
    lora_alpha: 16
  pruner: {{name: median, n_startup_trials: 1, n_warmup_steps: 0}}
  enqueue:
    - {{learning_rate: 1.6e-2, num_train_epochs: 1}}
    - {{learning_rate: 1.0e-5, num_train_epochs: 2}}
"""


def test_a_hopeless_trial_is_pruned_at_its_first_point_and_its_trainer_stops(tmp_path):
    study_file = tmp_path / "prune.yaml"
    study_file.write_text(STUDY)
    runs = tmp_path / "runs"
    done = sweep_cli("run", "--study", str(study_file), "--runs-dir", str(runs))
    assert done.returncode == 0, done.stdout + done.stderr
    study = optuna.load_study(study_name="prune", storage=f"sqlite:///{runs / 'prune' / 'study.db'}")
    good, hopeless = study.trials
    assert good.state == optuna.trial.TrialState.COMPLETE
    assert hopeless.state == optuna.trial.TrialState.PRUNED

    # each trial reported its eval points 1..4, whatever its step count
    assert sorted(good.intermediate_values) == [1, 2, 3, 4]
    assert [step for step, _ in good.user_attrs["eval_losses"]] == [5, 10, 15, 20]
    assert list(hopeless.intermediate_values) == [1]
    assert hopeless.intermediate_values[1] > good.intermediate_values[1]

    # the pruned trial keeps its history; its trainer stopped before the next point, cleanly
    assert hopeless.user_attrs["eval_losses"][0][0] == 10
    assert 10 <= hopeless.user_attrs["steps"] < 20
    assert hopeless.user_attrs["exit_status"] == 0
    trial_dir = runs / "prune" / "trials" / "00001"
    result = read_all(trial_dir / EVENTS_FILE)[-1]
    assert isinstance(result, Result) and result.status == "stopped"
    assert (trial_dir / STOP_FILE).exists() and not (trial_dir / ADAPTER_DIR).exists()
