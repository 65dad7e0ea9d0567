"""``python -m sweep status --study NAME [--json]``: the study's trials as a table, or as JSON for scripts.

A multi-objective study marks the trials on its Pareto front (``*``; ``"pareto_front": true``).
"""

from __future__ import annotations

import json

from rich.console import Console

from sweep.results.trial_table import trial_record, trials_table
from sweep.run.base_model import base_line
from sweep.schema.objectives import Objectives
from sweep.study.locate import add_study_arguments, open_existing


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("status", help="list a study's trials", description=__doc__.splitlines()[0])
    add_study_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON list of trials instead of a table")
    parser.set_defaults(func=main)


def main(args) -> int:
    study, optuna_study = open_existing(args)
    objectives = Objectives.of_study(optuna_study)
    on_front = {t.number for t in optuna_study.best_trials} if objectives.multi else None
    records = [trial_record(t, objectives, on_front) for t in optuna_study.get_trials(deepcopy=False)]
    if args.json:
        print(json.dumps(records, indent=2, default=str))
    else:
        console = Console()
        console.print(trials_table(records, f"study {optuna_study.study_name}", objectives))
        line = base_line(optuna_study.user_attrs)
        if line:
            console.print(line)
    return 0
