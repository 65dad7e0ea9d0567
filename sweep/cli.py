"""Command line of the sweep: ``python -m sweep {run,status,best,dashboard,report,export} --study NAME``.

Installed, the same command is ``lora-sweep``. Examples::

    python -m sweep run --study demo              # run (or resume) studies/demo.yaml
    python -m sweep status --study demo --json    # trials as JSON
    python -m sweep best --study demo             # the best trial and its adapter
    python -m sweep dashboard --study demo        # compare trials in optuna-dashboard, with their files
    python -m sweep report --study demo           # HTML report: loss curves, importances, samples
    python -m sweep export --study demo --to out/ # the best adapter with a model card (--merge: merged too)

User mistakes print one line each (``error: ...``) and exit 2; ``-v`` shows the traceback. Ctrl-C or
SIGTERM exits 130 (a running study first stops its trainers; see ``sweep.run.stop_signals``).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from sweep import __version__
from sweep.commands import best, dashboard, export, report, run, status
from sweep.errors import UserError
from sweep.run import stop_signals

COMMANDS = (run, status, best, dashboard, report, export)
VERBOSE_HELP = "show tracebacks of errors"


def program_name(argv0: str | None = None) -> str:
    """How the user called us, for usage lines: ``lora-sweep`` (the installed script) or ``python -m sweep``."""
    name = Path(argv0 if argv0 is not None else sys.argv[0]).name
    return "python -m sweep" if name in ("__main__.py", "-c", "") else name


def plain(text: str) -> str:
    """A docstring as help text: reST's ``literal`` quotes and ``Examples::`` become plain text."""
    return re.sub(r"``(.+?)``", r"\1", text).replace("::\n", ":\n")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    doc = plain(__doc__).replace("python -m sweep", prog or program_name())
    parser = argparse.ArgumentParser(prog=prog or program_name(), description=doc.splitlines()[0],
                                     epilog="\n".join(doc.splitlines()[2:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-V", "--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(subparsers)
        name = command.__name__.rsplit(".", 1)[1]
        sub = subparsers.choices[name]
        text = plain(command.__doc__).replace("python -m sweep", parser.prog).strip().splitlines()
        sub.description, sub.epilog = text[0], "\n".join(text[2:]) or None
        sub.formatter_class = argparse.RawDescriptionHelpFormatter
        # -v after the command too; SUPPRESS keeps a -v given before it
        sub.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
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
