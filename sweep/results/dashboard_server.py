"""Serving optuna-dashboard for one study, with the study's artifact store; see ``sweep.commands.dashboard``.

optuna-dashboard's own WSGI app (``optuna_dashboard.wsgi``) on a threaded ``wsgiref`` server, as its
CLI does: a browser loads the page, the bundle and several API calls at once, and a single-threaded
server would answer them one by one. Request lines are not logged; a port in use or a host that
cannot be bound is a one-line error.
"""

from __future__ import annotations

import shlex
import socketserver
import sys
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from sweep.errors import UserError
from sweep.results.trial_artifacts import ARTIFACTS_DIR, artifact_store
from sweep.study.locate import open_existing, storage_name, storage_url
from sweep.study.storage import _redact, rdb_storage, study_dir


class _ThreadedServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        # a browser that closes a tab or a connection mid-request is normal, not a traceback on the terminal
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args) -> None:  # one line per request would bury the URL
        pass


def plain_command(url: str, folder: Path, host: str, port: int) -> str:
    """The ``optuna-dashboard`` command line that serves the same study with its trial files.

    Plain optuna-dashboard lists a trial's artifacts only when given the artifact store's folder.
    """
    words = ["optuna-dashboard", _redact(url), "--artifact-dir", str(Path(folder) / ARTIFACTS_DIR)]
    words += [] if host == "127.0.0.1" else ["--host", host]
    words += [] if port == 8080 else ["--port", str(port)]
    return shlex.join(words)


def serve_dashboard(args, host: str, port: int) -> int:
    """Serve the dashboard of ``args.study`` on ``host:port`` until Ctrl-C; returns the exit code."""
    import optuna_dashboard

    study, optuna_study = open_existing(args)  # a study never run is a UserError here, not a 404 in the browser
    url, folder = storage_url(args, study), study_dir(args.runs_dir, study.name)
    storage = rdb_storage(url, label=storage_name(args, study), create_tables=False)
    study_id = storage.get_study_id_from_name(optuna_study.study_name)
    app = optuna_dashboard.wsgi(storage, artifact_store=artifact_store(folder))
    try:
        server = make_server(host, port, app, server_class=_ThreadedServer, handler_class=_QuietHandler)
    except OSError as e:
        raise UserError(f"--host {host} --port {port}: cannot listen there: {e.strerror or e}; "
                        "choose another port with --port") from None
    print(f"optuna-dashboard for study {study.name}: http://{host}:{port}/dashboard/studies/{study_id}"
          " (Ctrl-C to stop)", flush=True)
    print(f"the same with plain optuna-dashboard: {plain_command(url, folder, host, port)}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM, also where SIGINT came ignored (see sweep.run.stop_signals)
        print("dashboard stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0
