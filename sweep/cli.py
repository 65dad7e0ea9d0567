"""Command line of the sweep: ``python -m sweep {run,status,best,dashboard,report,export} --study NAME``.

Examples::

    python -m sweep run --study demo              # run (or resume) studies/demo.yaml
    python -m sweep status --study demo --json    # trials as JSON
    python -m sweep best --study demo             # the best trial and its adapter
    python -m sweep dashboard --study demo        # compare trials in optuna-dashboard, with their files
    python -m sweep report --study demo           # HTML report: loss curves, importances, samples
    python -m sweep export --study demo --to out/ # the best adapter with a model card (--merge: merged too)

User mistakes print one line each (``error: ...``) and exit 2; ``-v`` shows the traceback. Ctrl-C or
SIGTERM exits 130 (a running study first stops its trainers; see ``sweep.stop_signals``).
"""

from __future__ import annotations

import argparse
import sys

from sweep import stop_signals
from sweep.commands import best, dashboard, export, report, run, status
from sweep.errors import UserError

COMMANDS = (run, status, best, dashboard, report, export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sweep", description=__doc__.splitlines()[0],
                                     epilog="\n".join(__doc__.splitlines()[2:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks of errors")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code (2: a user mistake, 130: stopped by Ctrl-C or SIGTERM)."""
    stop_signals.install()
    try:
        args = build_parser().parse_args(argv)
        try:
            return args.func(args)
        except UserError as e:
            if args.verbose:
                raise
            for line in str(e).splitlines():
                print(f"error: {line}", file=sys.stderr)
            return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return stop_signals.EXIT_CODE
