"""What a study optimises: ``search.objective``, one metric or a list of them (multi-objective).

    search:
      objective: last_eval                  # the default: the eval loss at the end of training
      objective: best_eval                  # the lowest eval loss over the trial's eval points
      objective: chrf                       # chrF of the sample answers (needs samples.count > 0)
      objective: [best_eval, gpu_seconds]   # both: Optuna keeps the Pareto front of the two

Each metric has its own direction, so a study file never says "maximize": losses and seconds are
minimised, chrF is maximised. The metrics:

- ``last_eval``: the eval loss after the last step; the trial keeps the adapter of its last step.
- ``best_eval``: the lowest eval loss over the trial's eval points; the trial keeps the adapter of
  that point (the trainer saves it whenever an eval point improves on the best so far).
- ``chrf``: the corpus chrF (0 to 100) of the trial's answers to the first ``samples.count`` eval
  prompts against the references (:mod:`trainer.samples`).
- ``gpu_seconds``: the trial's training seconds (``trainer.train()``, not loading or sampling) on
  its one device; a trial resumed from a checkpoint counts its resumed steps at the pace it trained
  them. Trials that share a GPU train slower: compare within one ``--trials-per-gpu``.

A list holds at most one loss (``last_eval`` or ``best_eval``: they keep different adapters), and
``gpu_seconds`` never alone (it would only find the shortest trial). Optuna prunes on the eval-loss
curve, so pruning is for studies whose objective is one loss; the pruner defaults to ``none`` for the
others, and naming one is an error. The Optuna study records each metric's label (its metric names,
which optuna-dashboard shows) and direction; :meth:`Objectives.of_study` reads them back.

Imports nothing heavy: the study file's schema uses it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

Metric = Literal["last_eval", "best_eval", "chrf", "gpu_seconds"]
METRICS: tuple[str, ...] = get_args(Metric)
DEFAULT = "last_eval"
LOSSES = ("last_eval", "best_eval")
# how each metric is labelled (Optuna's metric names: the dashboard's axis titles) and which way is better
LABELS = {"last_eval": "eval_loss", "best_eval": "best_eval_loss", "chrf": "chrF", "gpu_seconds": "gpu_seconds"}
TITLES = {"last_eval": "eval loss", "best_eval": "best eval loss", "chrf": "chrF", "gpu_seconds": "GPU seconds"}
DIRECTIONS = {"last_eval": "minimize", "best_eval": "minimize", "chrf": "maximize", "gpu_seconds": "minimize"}
# which adapter a trial keeps (trainer.spec.TrialSpec.keep_adapter): the best eval point's only for best_eval
KEEP_ADAPTER = {"best_eval": "best_eval"}


def objective_problem(names: list[str]) -> str | None:
    """Why ``names`` cannot be a study's objective, or None."""
    if not names:
        return f"give at least one metric: {', '.join(METRICS)}"
    if len(set(names)) != len(names):
        return "a metric is named twice"
    if set(LOSSES) <= set(names):
        return ("last_eval and best_eval are two readings of one eval loss and keep different adapters; "
                "choose one")
    if names == ["gpu_seconds"]:
        return "gpu_seconds alone would find the shortest trial, not a good one; pair it with a quality metric, " \
               "e.g. [best_eval, gpu_seconds]"
    return None


@dataclass(frozen=True)
class Objectives:
    """A study's objective: its metrics in order, with their labels and directions."""

    names: tuple[str, ...] = (DEFAULT,)

    @classmethod
    def of_study(cls, optuna_study) -> Objectives:
        """The objective an Optuna study was created for, read from its metric names (none: a study made
        before objectives could be chosen, which minimised the last eval loss)."""
        labels = optuna_study.metric_names or [LABELS[DEFAULT]]
        by_label = {label: name for name, label in LABELS.items()}
        return cls(tuple(by_label.get(label, label) for label in labels))

    @property
    def labels(self) -> list[str]:
        return [LABELS.get(n, n) for n in self.names]

    @property
    def titles(self) -> list[str]:
        """How prose and charts name the metrics (``eval loss``, ``GPU seconds``)."""
        return [TITLES.get(n, n) for n in self.names]

    @property
    def directions(self) -> list[str]:
        return [DIRECTIONS.get(n, "minimize") for n in self.names]

    @property
    def multi(self) -> bool:
        """More than one metric: Optuna keeps a Pareto front instead of a best trial."""
        return len(self.names) > 1

    @property
    def prunable(self) -> bool:
        """Whether a pruner can act: the objective is one loss, the curve the trials report."""
        return len(self.names) == 1 and self.names[0] in LOSSES

    @property
    def keep_adapter(self) -> str:
        """Which adapter each trial keeps: ``best_eval`` (the best eval point's) or ``last``."""
        return next((KEEP_ADAPTER[n] for n in self.names if n in KEEP_ADAPTER), "last")

    def describe(self) -> str:
        """``eval_loss (minimize)``, or the list for several metrics."""
        return ", ".join(f"{label} ({direction})" for label, direction in zip(self.labels, self.directions, strict=True))

    def better(self, a: float, b: float | None) -> bool:
        """Whether ``a`` beats ``b`` on a single-metric objective (None and NaN lose to any number)."""
        if b is None or math.isnan(b):
            return not math.isnan(a)
        return a > b if self.directions[0] == "maximize" else a < b

    def ranked(self, trials) -> list:
        """Complete single-metric trials, best first (ties by number)."""
        sign = -1 if self.directions[0] == "maximize" else 1
        return sorted(trials, key=lambda t: (sign * t.values[0], t.number))

    def format(self, values) -> str:
        """``eval_loss=2.5012`` or ``best_eval_loss=2.4011 gpu_seconds=31.2``."""
        values = values if isinstance(values, (list, tuple)) else [values]
        return " ".join(f"{label}={value:.4f}" if label != "gpu_seconds" else f"{label}={value:.1f}"
                        for label, value in zip(self.labels, values, strict=True))


def front(optuna_study) -> list:
    """The study's best trials, by number: its best trial, or the Pareto front of a multi-objective study.

    A repeat (``repeat_of``: a configuration that already ran, given its earlier values) stands for the
    trial it repeats, which has the same values and the adapter.
    """
    from optuna.trial import TrialState

    from sweep.study.trial_attrs import REPEAT_OF

    trials = optuna_study.get_trials(deepcopy=False)
    if not any(t.state == TrialState.COMPLETE for t in trials):
        return []
    best = optuna_study.best_trials if len(optuna_study.directions) > 1 else [optuna_study.best_trial]
    numbers = {t.user_attrs.get(REPEAT_OF, t.number) for t in best}
    return [t for t in trials if t.number in numbers]
