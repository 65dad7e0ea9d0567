"""``python -m sweep dashboard``: the real optuna-dashboard on a finished study, checked over HTTP and in Chromium."""

from __future__ import annotations

import json
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import optuna

from tests.sweep.live_study import ROOT, sweep_cli, sweep_env, write_study


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> bytes:
    # browsers send Accept-Encoding, and optuna-dashboard's static files need it
    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


@contextmanager
def _dashboard(study, port: int, stop: signal.Signals = signal.SIGINT):
    """Start ``python -m sweep dashboard`` and wait until it answers; yields (base URL, its first two output lines)."""
    # stderr to a file, not a pipe nobody reads: a server that writes more than a pipe holds would block
    errors = tempfile.TemporaryFile("w+")
    process = subprocess.Popen([sys.executable, "-m", "sweep", "dashboard", *study.args(), "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=errors, text=True, env=sweep_env(), cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            assert process.poll() is None, _read(errors)
            try:
                _get(f"{base}/api/meta")
                break
            except OSError:
                assert time.time() < deadline, "the dashboard did not answer within 60 s"
                time.sleep(0.2)
        yield base, [process.stdout.readline().strip() for _ in range(2)]
    finally:
        process.send_signal(stop)  # Ctrl-C (or a service manager's SIGTERM): the command stops cleanly
        assert process.wait(timeout=60) == 0, _read(errors)
        assert "Traceback" not in _read(errors)


def _read(file) -> str:
    file.seek(0)
    return file.read()


def _listening_addresses(port: int) -> set[str]:
    """Local IPv4 addresses with a socket listening on ``port`` (from /proc/net/tcp)."""
    found = set()
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if int(hex_port, 16) == port and state == "0A":  # 0A: LISTEN
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def test_dashboard_shows_the_trials_their_values_params_and_files(finished_study, chromium, tmp_path):
    study = optuna.load_study(study_name=finished_study.name, storage=finished_study.storage)
    port = _free_port()
    with _dashboard(finished_study, port) as (base, (first_line, _)):
        assert _listening_addresses(port) == {"127.0.0.1"}
        summaries = json.loads(_get(f"{base}/api/studies"))["study_summaries"]
        assert [s["study_name"] for s in summaries] == [finished_study.name]
        study_id = summaries[0]["study_id"]
        assert first_line == (f"optuna-dashboard for study {finished_study.name}: "
                              f"{base}/dashboard/studies/{study_id} (Ctrl-C to stop)")

        served = json.loads(_get(f"{base}/api/studies/{study_id}"))["trials"]
        assert [t["number"] for t in served] == [t.number for t in study.trials]
        for shown, trial in zip(served, study.trials, strict=True):
            assert shown["state"] == "Complete" and shown["values"] == [trial.value]
            assert {p["name"]: p["param_external_value"] for p in shown["params"]} == \
                {name: str(value) for name, value in trial.params.items()}
            files = {a["filename"]: a for a in shown["artifacts"]}
            assert sorted(files) == ["samples.jsonl", "spec.json", "trainer.log"]
            samples = _get(f"{base}/artifacts/{study_id}/{shown['trial_id']}/{files['samples.jsonl']['artifact_id']}")
            assert [json.loads(line) for line in samples.decode().splitlines()] == trial.user_attrs["samples"]

        trials_page = chromium(f"{base}/dashboard/studies/{study_id}/trials", "--dump-dom")
        for trial in study.trials:
            assert f"Trial {trial.number}" in trials_page
        assert "Best Trial" in trials_page
        assert all(name in trials_page for name in ("samples.jsonl", "spec.json", "trainer.log"))
        study_page = chromium(f"{base}/dashboard/studies/{study_id}", "--dump-dom")
        assert f"Best Trial (number={study.best_trial.number})" in study_page
        screenshot = tmp_path / "dashboard.png"
        chromium(f"{base}/dashboard/studies/{study_id}/trials", f"--screenshot={screenshot}", "--window-size=1400,1400")
        assert screenshot.stat().st_size > 20_000


def test_dashboard_prints_the_plain_optuna_dashboard_command_that_shows_the_trial_files(finished_study):
    port, plain_port = _free_port(), _free_port()
    with _dashboard(finished_study, port) as (_, (_, second_line)):
        prefix = "the same with plain optuna-dashboard: "
        assert second_line == (f"{prefix}optuna-dashboard {finished_study.storage} --artifact-dir "
                               f"{finished_study.folder / 'artifacts'} --port {port}")
    command = shlex.split(second_line.removeprefix(prefix))
    command[command.index("--port") + 1] = str(plain_port)
    command[0] = str(Path(sys.executable).parent / "optuna-dashboard")  # the one installed beside this Python
    errors = tempfile.TemporaryFile("w+")
    plain = subprocess.Popen([*command, "--quiet"], stdout=subprocess.DEVNULL, stderr=errors)
    base = f"http://127.0.0.1:{plain_port}"
    try:
        deadline = time.time() + 60
        while True:
            assert plain.poll() is None, _read(errors)
            try:
                summaries = json.loads(_get(f"{base}/api/studies"))["study_summaries"]
                break
            except OSError:
                assert time.time() < deadline, "plain optuna-dashboard did not answer within 60 s"
                time.sleep(0.2)
        served = json.loads(_get(f"{base}/api/studies/{summaries[0]['study_id']}"))["trials"]
        for trial in served:
            assert sorted(a["filename"] for a in trial["artifacts"]) == ["samples.jsonl", "spec.json", "trainer.log"]
            artifact = trial["artifacts"][0]
            assert _get(f"{base}/artifacts/{summaries[0]['study_id']}/{trial['trial_id']}/{artifact['artifact_id']}")
    finally:
        plain.terminate()
        plain.wait(timeout=30)


def test_dashboard_stops_cleanly_on_sigterm(finished_study):
    with _dashboard(finished_study, _free_port(), stop=signal.SIGTERM) as (base, _):
        assert json.loads(_get(f"{base}/api/studies"))["study_summaries"]


def test_dashboard_on_a_port_in_use_is_a_one_line_error(finished_study):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = sweep_cli("dashboard", *finished_study.args(), "--port", str(port))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"error: --host 127.0.0.1 --port {port}: cannot listen there: "
                                        "Address already in use; choose another port with --port"]


def test_dashboard_rejects_a_port_out_of_range(finished_study):
    done = sweep_cli("dashboard", *finished_study.args(), "--port", "70000")
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["error: --port: '70000' is not allowed: give a port number from 1 to 65535"]


def test_dashboard_of_a_study_never_run_says_so(tmp_path):
    path = write_study(tmp_path, "never-run", 1)
    done = sweep_cli("dashboard", "--study", str(path), "--runs-dir", str(tmp_path / "runs"))
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith("error: no study database at ") and "python -m sweep run --study never-run" in done.stderr
