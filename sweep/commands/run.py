"""``python -m sweep run --study NAME``: run (or resume) a study until it has ``n_trials`` finished trials.

Running the same command again resumes: finished trials count towards ``n_trials``, trials left
RUNNING by a killed orchestrator are failed by Optuna's heartbeat check and retried, and trials
interrupted by Ctrl-C are retried from their last checkpoint.
"""

from __future__ import annotations

from sweep.study_runs import add_study_arguments


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("run", help="run or resume a study", description=__doc__.splitlines()[0])
    add_study_arguments(parser)
    parser.add_argument("--gpus", help="comma-separated GPU indices to run trials on (default: the trainer's choice)")
    parser.add_argument("--trials-per-gpu", default="1", help="concurrent trials per GPU (default 1)")
    parser.set_defaults(func=main)


def main(args) -> int:
    from sweep.run_study import run_study  # optuna and friends: only once a command runs

    return run_study(args)
