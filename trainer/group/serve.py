"""A group worker: one shared base on one device, trials joining as the orchestrator hands them over.

    python -m trainer.group.serve --targets q_proj,v_proj [--matmul loop] [--folder DIR]

The orchestrator (``sweep.launch.group_workers``) starts one per device when a study says
``execution.backend: grouped`` and writes one request per line to its stdin, as to a warm worker
(``{"spec": PATH, "env": {...}}``). The first request loads the base (its ``model`` section);
every trial joins the group at the next step and trains beside the others
(:mod:`trainer.group.run_group`), writing its own folder as ``python -m trainer`` would (events,
checkpoints, adapter, result). A trial leaves when it ends, is stopped (its ``STOP`` file) or fails;
the worker waits for the next request when none is left, and exits when its stdin closes and every
trial has ended. A failure of the shared forward ends the trials training at that step (each gets
the reason); the worker goes on with the next ones.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import threading
from pathlib import Path

END = None  # what the stdin reader queues when the orchestrator closes the pipe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.group.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--targets", required=True, help="comma-separated module names any trial may adapt")
    parser.add_argument("--matmul", choices=["loop", "bmm", "stacked"], default="loop", help="as python -m trainer.group")
    parser.add_argument("--attention", choices=["eager", "sdpa"], help="as python -m trainer.group")
    parser.add_argument("--folder", help="the worker's folder under the study (its log; shown in ps)")
    args = parser.parse_args(argv)
    # every step of a group has a shape of its own (its members' rows): grown segments instead of cached blocks
    # of fixed sizes keep the allocator from freeing and reallocating (measured: 15% of steps 2x slower without)
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

    from trainer.process_guard import exit_with_parent

    exit_with_parent()
    requests: queue.Queue = queue.Queue()
    threading.Thread(target=_read_requests, args=(sys.stdin, requests), name="requests", daemon=True).start()
    serve(requests, args.targets.split(","), args.matmul, args.attention)
    return 0


def _read_requests(stream, requests: queue.Queue) -> None:
    for line in stream:
        if line.strip():
            requests.put(json.loads(line))
    requests.put(END)


def serve(requests: queue.Queue, targets: list[str], matmul: str = "loop", attention: str | None = None) -> None:
    """Train the requested trials as one group until the requests end and every trial has left."""
    from trainer.group.run_group import TrialFolder, end_unstarted, open_group, unopened_result
    from trainer.spec import TrialSpec

    group, ended = None, False
    while not ended or (group is not None and group.live):
        busy = group is not None and bool(group.live)
        while True:
            try:
                request = requests.get(block=not busy)  # idle: wait for a trial; training: take what has come
            except queue.Empty:
                break
            if request is END:
                ended = True
                break
            folder = TrialFolder(TrialSpec.read(Path(request["spec"])))
            if group is None:
                try:
                    group = open_group(folder.spec, targets, matmul, attention)
                except Exception as error:  # no base: this trial ends with the reason; the next request tries again
                    end_unstarted(folder, unopened_result(error))
                    continue
            with _environment(request.get("env", {})):
                group.join(folder)
            busy = bool(group.live)
        if group is not None and group.live:
            group.step()


class _environment:
    """The trial's own variables (its fault injection, in tests) while it joins; the process's afterwards."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env, self.saved = env, {}

    def __enter__(self) -> None:
        self.saved = {key: os.environ.get(key) for key in self.env}
        os.environ.update(self.env)

    def __exit__(self, *exc) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


if __name__ == "__main__":
    sys.exit(main())
