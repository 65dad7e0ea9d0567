"""Ctrl-C and SIGTERM for the whole life of a sweep command: the first one stops, the second exits 130 at once.

:func:`install` runs first thing in :func:`sweep.cli.main` and sets one handler for SIGINT and
SIGTERM that stays until the process ends; Python's default handler is never put back. The first
signal calls the stop callback of the running study (:func:`stopping_with`: its trainers are ended
and their trials recorded as interrupted) or, with no study running, raises ``KeyboardInterrupt``,
which the CLI turns into exit code 130. Every later signal ends the process with
``os._exit(130)`` at once, whatever it is doing: waiting for threads, closing the storage, or
already past ``main``.

Two windows remain where a handler set with :mod:`signal` cannot answer, and both are closed here:
the interpreter's shutdown resets every Python-level handler to the default after the ``atexit``
callbacks (a signal then would end the process by SIGINT, returncode -2), so an ``atexit`` callback
registered by :func:`install` ignores both signals from there on; the trainers are not affected,
they were ended before. The handler is also set where SIGINT came ignored (a job started with ``&``
by a shell without job control), so a SIGINT sent on purpose still stops the run.

Example::

    install()
    with stopping_with(objective.interrupt):
        loop.run()        # first Ctrl-C: objective.interrupt(); second: exit 130 now
"""

from __future__ import annotations

import atexit
import os
import signal
from collections.abc import Callable
from contextlib import contextmanager

EXIT_CODE = 130  # 128 + SIGINT, as shells report a command stopped by Ctrl-C
SIGNALS = (signal.SIGINT, signal.SIGTERM)

_installed = False
_signals_seen = 0
_on_stop: Callable[[], None] | None = None


def install() -> None:
    """Set the handler for SIGINT and SIGTERM for the rest of the process (again: no effect)."""
    global _installed
    if _installed:
        return
    for sig in SIGNALS:
        signal.signal(sig, _handle)
    atexit.register(_ignore_from_now_on)
    _installed = True


@contextmanager
def stopping_with(callback: Callable[[], None]):
    """While inside, the first signal calls ``callback`` (in the main thread) instead of raising."""
    global _on_stop
    _on_stop = callback
    try:
        yield
    finally:
        _on_stop = None


def _handle(signum, frame) -> None:
    global _signals_seen
    _signals_seen += 1
    if _signals_seen > 1:
        os._exit(EXIT_CODE)  # trainers notice that their parent is gone and end themselves
    if _on_stop is None:
        raise KeyboardInterrupt
    _on_stop()


def _ignore_from_now_on() -> None:
    # after the atexit callbacks the interpreter restores the default handlers, under which a signal
    # would end the process by SIGINT instead of with its exit code
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
