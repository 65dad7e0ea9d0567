"""Reporting a trial's evaluations to Optuna and asking whether to prune: one rule for every backend.

The real objective (:mod:`sweep.run.objective`, following a trainer's ``events.jsonl``) and the replay
(:mod:`bench.replay`, answering from recorded learning curves) both feed each evaluation to an
:class:`EvalReporter`, so the benchmark measures the code a real study runs.

A multi-objective study takes no reports (Optuna cannot prune one): its reporter only keeps the history.

The step reported to Optuna is the evaluation's *point*, its ordinal among the trial's
``training.eval_points`` evenly spread evaluations (1, 2, ...), so a 1-epoch and a 3-epoch trial
are compared at the same fraction of their own learning-rate schedule (see ``docs/pruning.md``).
Trials that evaluate every ``training.eval_steps`` steps instead have no points and report the
global step.

Example::

    reporter = EvalReporter(trial)
    for point, (step, loss) in enumerate(curve, start=1):
        if reporter.evaluated(step, loss, point):
            break  # stop training; the trial ends as PRUNED
"""

from __future__ import annotations

from sweep.study.trial_attrs import EVAL_LOSSES


class EvalReporter:
    """Keeps one trial's eval history, reports each evaluation and says once when the trial should stop.

    Args:
        trial: the running ``optuna.Trial``.
    """

    def __init__(self, trial) -> None:
        self.trial = trial
        self.history: list[list[float]] = []
        self.pruned_at: int | None = None
        self.reports = len(trial.study.directions) == 1

    @property
    def pruned(self) -> bool:
        """Whether the pruner has asked this trial to stop."""
        return self.pruned_at is not None

    def evaluated(self, step: int, eval_loss: float, point: int | None = None) -> bool:
        """Record an evaluation; True exactly once, at the evaluation where the pruner says stop.

        Evaluations that arrive after that (the trainer finishing its step) are kept in the history
        but not reported: the decision is made.
        """
        self.history.append([step, eval_loss])
        self.trial.set_user_attr(EVAL_LOSSES, self.history)
        if self.pruned or not self.reports:
            return False
        reported = point if point is not None else step
        self.trial.report(eval_loss, reported)
        if self.trial.should_prune():
            self.pruned_at = reported
            return True
        return False
