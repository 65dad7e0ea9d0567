"""``python -m sweep best --study NAME [--json]``: the best trial, its parameters and its adapter.

An adapter folder that is no longer on disk (a moved or cleaned runs folder) is said so, next to
its path (``--json``: ``"adapter_on_disk": false``).
"""

from __future__ import annotations

import json

from sweep.errors import UserError
from sweep.results.trial_table import trial_record
from sweep.study.locate import add_study_arguments, open_existing
from sweep.study.trial_attrs import ADAPTER_PATH, LORA_ALPHA, USE_RSLORA


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("best", help="show the best trial", description=__doc__.splitlines()[0])
    add_study_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the trial as JSON")
    parser.set_defaults(func=main)


def best_trial(optuna_study, study_name: str):
    from optuna.trial import TrialState

    if not optuna_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise UserError(f"study {study_name} has no complete trial yet")
    return optuna_study.best_trial


def main(args) -> int:
    from sweep.results.export_adapter import trial_adapter

    study, optuna_study = open_existing(args)
    trial = best_trial(optuna_study, study.name)
    record = trial_record(trial)
    try:
        trial_adapter(trial)
        missing = ""
    except UserError:
        missing = "  (missing: no adapter there any more; was the runs folder moved or cleaned?)"
    if args.json:
        print(json.dumps({**record, "adapter_on_disk": not missing}, indent=2, default=str))
        return 0
    attrs = record["user_attrs"]
    print(f"best trial of {study.name}: #{record['number']}  eval_loss {record['value']:.4f}")
    for name, value in record["params"].items():
        print(f"  {name}: {value}")
    print(f"  lora_alpha: {attrs.get(LORA_ALPHA)}\n  use_rslora: {attrs.get(USE_RSLORA)}")
    print(f"  adapter: {attrs.get(ADAPTER_PATH)}{missing}")
    return 0
