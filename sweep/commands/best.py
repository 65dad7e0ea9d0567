"""``python -m sweep best --study NAME [--json]``: the best trial, its parameters and its adapter.

A multi-objective study has no one best trial: ``best`` lists its Pareto front, the trials that no
other trial beats on every metric (``--json``: a list of them), each with its values and adapter.
An adapter folder that is no longer on disk (a moved or cleaned runs folder) is said so, next to
its path (``--json``: ``"adapter_on_disk": false``).
"""

from __future__ import annotations

import json

from sweep.errors import UserError
from sweep.results.trial_table import trial_record
from sweep.schema.objectives import Objectives, front
from sweep.study.locate import add_study_arguments, open_existing
from sweep.study.trial_attrs import ADAPTER_PATH, LORA_ALPHA, USE_RSLORA

MISSING = "  (missing: no adapter there any more; was the runs folder moved or cleaned?)"


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("best", help="show the best trial (or the Pareto front)",
                                   description=__doc__.splitlines()[0])
    add_study_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the trial (a list of trials: the front) as JSON")
    parser.set_defaults(func=main)


def best_trials(optuna_study, study_name: str) -> list:
    """The best trial, or a multi-objective study's Pareto front; a UserError before any trial completes."""
    trials = front(optuna_study)
    if not trials:
        raise UserError(f"study {study_name} has no complete trial yet")
    return trials


def main(args) -> int:
    study, optuna_study = open_existing(args)
    objectives = Objectives.of_study(optuna_study)
    trials = best_trials(optuna_study, study.name)
    records = [{**trial_record(t, objectives), "adapter_on_disk": _on_disk(t)} for t in trials]
    if args.json:
        print(json.dumps(records if objectives.multi else records[0], indent=2, default=str))
        return 0
    if objectives.multi:
        print(f"Pareto front of {study.name}: {len(records)} trials, none beaten on every metric by another "
              f"({objectives.describe()})")
        for record in records:
            print(f"#{record['number']}  {objectives.format(list(record['values'].values()))}")
            _describe(record)
        return 0
    record = records[0]
    print(f"best trial of {study.name}: #{record['number']}  {objectives.labels[0]} {record['value']:.4f}")
    _describe(record)
    return 0


def _on_disk(trial) -> bool:
    from sweep.results.export_adapter import trial_adapter

    try:
        trial_adapter(trial)
    except UserError:
        return False
    return True


def _describe(record: dict) -> None:
    attrs = record["user_attrs"]
    for name, value in record["params"].items():
        print(f"  {name}: {value}")
    print(f"  lora_alpha: {attrs.get(LORA_ALPHA)}\n  use_rslora: {attrs.get(USE_RSLORA)}")
    print(f"  adapter: {attrs.get(ADAPTER_PATH)}{'' if record['adapter_on_disk'] else MISSING}")
