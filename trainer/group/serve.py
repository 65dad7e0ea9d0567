"""A group worker: one shared base on one device, trials joining as the orchestrator hands them over.

    python -m trainer.group.serve --targets q_proj,v_proj [--matmul loop] [--max-live K] [--folder DIR]

The orchestrator (``sweep.launch.group_workers``) starts one per device when a study says
``execution.backend: grouped`` and writes one request per line to its stdin, as to a warm worker
(``{"spec": PATH, "env": {...}}``). The first request loads the base (its ``model`` section);
every trial joins the group at the next step with a free place (at most ``--max-live`` train at
once; the orchestrator hands over a few more, so that the next trial is there when one leaves) and
trains beside the others (:mod:`trainer.group.run_group`), writing its own folder as ``python -m
trainer`` would (events, checkpoints, adapter, result). A trial leaves when it ends, is stopped (its
``STOP`` file, also while it waits) or fails; the worker waits for the next request when none is
left, and exits when its stdin closes and every trial has ended. Where its time went
(:mod:`trainer.group.ledger`) goes to its log every minute and at the end, and to ``ledger.json`` in
``--folder`` (also when it is stopped with SIGTERM, as the orchestrator stops it). A failure of the
shared forward ends the trials training at that step (each gets the reason); the worker goes on with
the next ones.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import sys
import threading
import time
from pathlib import Path

END = None  # what the stdin reader queues when the orchestrator closes the pipe
LEDGER_FILE = "ledger.json"  # in the worker's folder: where its time went (trainer.group.ledger)
LEDGER_EVERY_SECONDS = 60.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.group.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--targets", required=True, help="comma-separated module names any trial may adapt")
    parser.add_argument("--matmul", choices=["loop", "bmm", "stacked"], default="loop", help="as python -m trainer.group")
    parser.add_argument("--attention", choices=["eager", "sdpa"], help="as python -m trainer.group")
    parser.add_argument("--max-live", type=int, help="trials training at once (default: every trial handed over); "
                                                     "the others wait to join")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="stacked, on a GPU: replay each step shape as a CUDA graph (trainer.group.step_graphs)")
    parser.add_argument("--folder", type=Path, help="the worker's folder under the study (its log and ledger)")
    args = parser.parse_args(argv)
    # every step of a group has a shape of its own (its members' rows): grown segments instead of cached blocks
    # of fixed sizes keep the allocator from freeing and reallocating (measured: 15% of steps 2x slower without)
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

    from trainer.process_guard import exit_with_parent

    exit_with_parent()
    signal.signal(signal.SIGTERM, _last_report)  # the orchestrator stopped: its ledger is written first
    print(f"group worker: training at most {args.max_live or 'every'} trials at once", flush=True)
    requests: queue.Queue = queue.Queue()
    threading.Thread(target=_read_requests, args=(sys.stdin, requests), name="requests", daemon=True).start()
    serve(requests, args.targets.split(","), args.matmul, args.attention, args.max_live,
          args.folder / LEDGER_FILE if args.folder else None, args.cuda_graphs)
    return 0


def _read_requests(stream, requests: queue.Queue) -> None:
    for line in stream:
        if line.strip():
            requests.put(json.loads(line))
    requests.put(END)


def serve(requests: queue.Queue, targets: list[str], matmul: str = "loop", attention: str | None = None,
          max_live: int | None = None, ledger_path: Path | None = None, cuda_graphs: bool = False) -> None:
    """Train the requested trials as one group until the requests end and every trial has its result."""
    from trainer.group.run_group import TrialFolder, end_unstarted, open_group, unopened_result
    from trainer.spec import TrialSpec

    group, ended, reported = None, False, time.monotonic()
    while not ended or (group is not None and group.busy):
        busy = group is not None and group.busy
        while True:
            try:
                request = requests.get(block=not busy)  # idle: wait for a trial; training: take what has come
            except queue.Empty:
                break
            if request is END:
                ended = True
                break
            folder = TrialFolder(TrialSpec.read(Path(request["spec"])), env=request.get("env", {}))
            if group is None:
                try:
                    group = open_group(folder.spec, targets, matmul, attention, max_live, cuda_graphs)
                except Exception as error:  # no base: this trial ends with the reason; the next request tries again
                    end_unstarted(folder, unopened_result(error))
                    continue
                _reporting.append(lambda ledger=group.ledger: _report(ledger, ledger_path))
            group.offer(folder)
            busy = True
        if group is not None and group.busy:
            group.advance()
        if group is not None and (time.monotonic() - reported > LEDGER_EVERY_SECONDS or not group.busy):
            reported = time.monotonic()
            _report(group.ledger, ledger_path)


_reporting: list = []  # the open group's ledger report, for a worker stopped with SIGTERM


def _last_report(signum, frame) -> None:
    """Write the ledger, then end by the signal as the default disposition would."""
    for report in _reporting:
        report()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _report(ledger, path: Path | None) -> None:
    print(ledger.line(), flush=True)
    if path is not None:
        try:
            ledger.write(path)
        except OSError as error:  # the worker's folder is for its log: a ledger that cannot be written is no failure
            print(f"ledger not written: {error}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
