"""``python -m sweep run --study NAME``: run (or resume) a study until it has ``n_trials`` finished trials.

Running the same command again resumes: finished trials count towards ``n_trials``, trials left
RUNNING by a killed orchestrator are failed as stale once their heartbeat is older than
``execution.stale_after_seconds`` and retried, and trials interrupted by Ctrl-C are retried; a retry
resumes from the trial's last checkpoint. An edited study file is compared with the one the study
recorded: see sweep.study.study_versions. Several workers (processes, hosts) may run the same
study at once through one storage; see docs/parallel.md.

``--n-trials N`` replaces ``search.n_trials`` for this run and is a total too, so the same command
run again resumes instead of adding trials; ``--n-trials +N`` asks for N more than the study has
finished now.
"""

from __future__ import annotations

from sweep.errors import UserError
from sweep.study.locate import add_study_arguments


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("run", help="run or resume a study", description=__doc__.splitlines()[0])
    add_study_arguments(parser)
    parser.add_argument("--gpus", help="GPU indices to run trials on, like 0,1,2,3, or 'all' "
                                       "(default: the trainer's choice: the only GPU, or the CPU)")
    parser.add_argument("--trials-per-gpu", default="1", metavar="K",
                        help="trials running at once on each GPU: a number, or 'auto' to fit as many as an "
                             "estimate of a trial's memory allows in each GPU's free memory (default 1)")
    parser.add_argument("--fresh", action="store_true",
                        help="start the study over: move its runs folder (RUNS_DIR/NAME, with its SQLite database) "
                             "aside to RUNS_DIR/NAME.old-DATE first")
    parser.add_argument("--n-trials", metavar="N", help="finished trials the study should have, for this run instead "
                        "of search.n_trials (a total: running the same command again resumes); +N: N more than now")
    parser.set_defaults(func=main)


def parse_n_trials(text: str | None) -> tuple[int, bool] | None:
    """``--n-trials`` as (count, whether it is on top of the finished trials); None when not given."""
    if text is None:
        return None
    more = text.startswith("+")
    digits = text.removeprefix("+")
    if not digits.isdigit() or int(digits) < 1:
        raise UserError(f"--n-trials: {text!r} is not allowed: give a total like 20, or +5 for 5 more than now")
    return int(digits), more


def main(args) -> int:
    args.n_trials = parse_n_trials(args.n_trials)
    from sweep.run.runner import run_study  # optuna and friends: only once a command runs

    return run_study(args)
