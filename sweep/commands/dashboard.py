"""``python -m sweep dashboard --study NAME [--host H] [--port P]``: optuna-dashboard on the study, with trial files.

Serves the real optuna-dashboard on the study's storage, with the study's artifact store
(``runs/NAME/artifacts``), so each trial's page lists its resolved spec, trainer log and sample
generations next to its loss curve. Binds to 127.0.0.1 unless ``--host`` says otherwise (the
dashboard can edit the study: expose it only on a network you trust). Ctrl-C stops it. It also
prints the plain ``optuna-dashboard`` command that shows the same: without ``--artifact-dir`` plain
optuna-dashboard shows no trial files.

Examples::

    python -m sweep dashboard --study demo                  # http://127.0.0.1:8080/
    python -m sweep dashboard --study demo --port 8090 --host 0.0.0.0
"""

from __future__ import annotations

from sweep.errors import UserError
from sweep.study.locate import add_study_arguments


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("dashboard", help="browse a study in optuna-dashboard",
                                   description=__doc__.splitlines()[0])
    add_study_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this host only)")
    parser.add_argument("--port", default="8080", help="port to listen on (default: 8080)")
    parser.set_defaults(func=main)


def parse_port(text: str) -> int:
    """``--port`` as a number from 1 to 65535, or a UserError saying so."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise UserError(f"--port: {text!r} is not allowed: give a port number from 1 to 65535")
    return int(text)


def main(args) -> int:
    port = parse_port(args.port)
    from sweep.results.dashboard_server import serve_dashboard  # optuna-dashboard: only once the command runs

    return serve_dashboard(args, args.host, port)
