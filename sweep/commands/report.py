"""``python -m sweep report --study NAME [--out DIR]``: a self-contained HTML report of a study, plus PNG charts.

Writes ``DIR/report.html`` (default DIR: ``runs/NAME/report``) with the eval-loss curves of all
trials, the best configuration, parameter importances, eval loss against each hyperparameter and
the sample generations of the best trials side by side; the charts also as ``DIR/*.png``. The page
needs no network: open it from disk, mail it, attach it to an issue. Running it again replaces
the files with the study's current state.

Examples::

    python -m sweep report --study demo                     # runs/demo/report/report.html
    python -m sweep report --study demo --out /tmp/demo-report
"""

from __future__ import annotations

from pathlib import Path

from sweep.errors import UserError
from sweep.study.locate import add_study_arguments, open_existing


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("report", help="write an HTML report of a study",
                                   description=__doc__.splitlines()[0])
    add_study_arguments(parser)
    parser.add_argument("--out", type=Path, help="folder for report.html and the PNGs (default: RUNS_DIR/NAME/report)")
    parser.set_defaults(func=main)


def main(args) -> int:
    from sweep.results.report import write_report
    from sweep.study.storage import study_dir

    study, optuna_study = open_existing(args)
    out = args.out if args.out is not None else study_dir(args.runs_dir, study.name) / "report"
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, not a folder; give a folder for report.html and the PNGs")
    written = write_report(optuna_study, study.name, study.config.description, out)
    print(f"report of study {study.name}: {written[0]}")
    for path in written[1:]:
        print(f"  chart: {path}")
    return 0

