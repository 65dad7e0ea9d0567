"""The stop signals of a sweep command at the moments a real run meets them: a second Ctrl-C exits 130
at once, also while Python waits for threads or tears the interpreter down after ``main`` returned
(where Python's own handlers would end the process by SIGINT, returncode -2)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from tests.sweep.live_study import ROOT, sweep_env

# A command's life in small: install, a "run" that the first signal stops, then a slow ending. The
# parent sends the second signal when the child says where it is.
PROGRAM = textwrap.dedent("""
    import os, sys, threading, time
    from sweep.run import stop_signals

    class SlowTeardown:  # freed with the module, after Python has reset its signal handlers
        def __init__(self):
            self.write, self.sleep = os.write, time.sleep
        def __del__(self):
            self.write(1, b"teardown\\n")
            self.sleep(1)

    keep = SlowTeardown()
    stopped = threading.Event()
    stop_signals.install()
    with stop_signals.stopping_with(stopped.set):
        print("running", flush=True)
        stopped.wait(30)
    print("stopped", flush=True)
    if sys.argv[1] == "threads":  # a thread that outlives main: Python waits for it on the way out
        threading.Thread(target=lambda: (print("waiting", flush=True), time.sleep(10))).start()
    sys.exit(130)
""")


def start(where: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", PROGRAM, where], stdout=subprocess.PIPE, text=True,
                            env=sweep_env(), cwd=ROOT)


def wait_for_line(process: subprocess.Popen, expected: str) -> None:
    for line in process.stdout:
        if line.strip() == expected:
            return
    raise AssertionError(f"the child ended before printing {expected!r}")


def test_second_signal_while_python_waits_for_threads_exits_130_at_once():
    process = start("threads")
    wait_for_line(process, "running")
    process.send_signal(signal.SIGINT)
    wait_for_line(process, "waiting")
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=5) == 130  # not after the thread's 10 s


def test_second_signal_during_the_interpreter_teardown_keeps_exit_130():
    """Past the atexit callbacks Python has put its default handlers back: the signal must not kill it."""
    process = start("teardown")
    wait_for_line(process, "running")
    process.send_signal(signal.SIGINT)
    wait_for_line(process, "teardown")
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=10) == 130  # Python's default would end it by SIGINT: -2


def test_sigterm_and_sigint_both_count():
    process = start("teardown")
    wait_for_line(process, "running")
    process.send_signal(signal.SIGTERM)
    wait_for_line(process, "stopped")
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=10) == 130


def test_ctrl_c_of_a_command_without_a_study_running_exits_130(tmp_path):
    """A command blocked before any study runs (reading a study file from a FIFO nobody writes) ends with 130."""
    fifo = tmp_path / "study.yaml"
    os.mkfifo(fifo)
    process = subprocess.Popen([sys.executable, "-m", "sweep", "status", "--study", str(fifo)],
                               stderr=subprocess.PIPE, text=True, env=sweep_env(), cwd=ROOT)
    time.sleep(2)  # imported and blocked in open()
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=10) == 130
    errors = process.stderr.read()
    assert errors.strip() == "interrupted", errors
