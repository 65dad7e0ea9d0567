"""Answering trials from recorded learning curves instead of training them: hundreds of studies in seconds.

A :class:`CurveTable` holds a grid of configurations that were each trained once, for real
(``bench/record_grid.py`` runs ``python -m sweep run`` on ``studies/grid-tiny.yaml`` and writes
``bench/data/tiny_grid.jsonl``). Each row is one configuration::

    {"params": {"learning_rate": 0.016, "num_train_epochs": 2, "r": 8, "alpha_per_rank": 2,
                "lora_alpha": 16, "use_rslora": false},
     "points": [{"point": 1, "step": 7, "eval_loss": 5.91, "seconds": 14.2}, ...],
     "eval_loss": 2.87, "seconds": 31.5, "setup_seconds": 11.8, "total_steps": 40, "trial": 17}

``seconds`` at a point counts from the trainer's start (imports and model loading included) to that
evaluation; the row's ``seconds`` is the trainer's whole wall time; ``setup_seconds`` is the part
before the first training step.

:class:`ReplayObjective` is an Optuna objective like :class:`sweep.run.objective.Objective`: it samples
the trial's values with the study's own :class:`~sweep.schema.search_space.SearchSpace`, looks the
configuration up, and feeds its recorded evaluations one by one to the same
:class:`~sweep.run.eval_reporter.EvalReporter` the real objective uses. A trial the pruner stops is
charged the recorded seconds up to the evaluation where it was stopped (the real trainer then runs
one more optimizer step and exits, which this leaves out); a finished trial is charged its whole
recorded time. A configuration that already ran takes that trial's outcome at no cost, as the real
objective does (:mod:`sweep.run.repeats`). With ``charge="train"`` only training time counts (seconds after setup up to the
evaluation), the regime of large models where loading is small beside training.

Example::

    table = CurveTable.load("bench/data/tiny_grid.jsonl")
    search = SearchConfig(n_trials=40, params=table.space())
    objective = replay_study(search, table)
    print(objective.spent_seconds, objective.best_value)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from sweep.study.trial_attrs import LORA_ALPHA, USE_RSLORA, WALL_SECONDS

PARAM_KEYS = ("learning_rate", "num_train_epochs", "r", "lora_alpha", "use_rslora")


@dataclass(frozen=True)
class Curve:
    """One recorded configuration: its eval points, final eval loss and wall seconds."""

    params: dict
    points: list[dict]
    eval_loss: float
    seconds: float
    setup_seconds: float

    def cost(self, points: int, charge: str = "wall") -> float:
        """Seconds charged for running up to (and including) eval point ``points``; all points: the whole run."""
        if charge == "train":
            return self.points[points - 1]["seconds"] - self.setup_seconds
        return self.seconds if points == len(self.points) else self.points[points - 1]["seconds"]


def config_key(values: dict) -> tuple:
    """A hashable key for a configuration's resolved values (floats rounded: 1.6e-2 from YAML or JSON match)."""
    return tuple(round(float(values[k]), 12) if isinstance(values[k], float) else values[k] for k in PARAM_KEYS)


@dataclass
class CurveTable:
    """A recorded grid: configuration -> :class:`Curve`."""

    curves: dict[tuple, Curve]

    @classmethod
    def load(cls, path: str | Path) -> CurveTable:
        curves = {}
        for line in Path(path).read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                curve = Curve(row["params"], row["points"], row["eval_loss"], row["seconds"], row["setup_seconds"])
                curves[config_key(row["params"])] = curve
        return cls(curves)

    def lookup(self, values: dict, snap_lr: bool = False) -> Curve:
        """The curve of a configuration; ``snap_lr`` answers any learning rate with the nearest recorded one."""
        if snap_lr:
            rate = values["learning_rate"]
            values = {**values, "learning_rate": min(self.choices("learning_rate"),
                                                     key=lambda r: abs(math.log(r / rate)))}
        try:
            return self.curves[config_key(values)]
        except KeyError:
            raise KeyError(f"configuration {values} was not recorded in the table") from None

    @property
    def best_value(self) -> float:
        return min(c.eval_loss for c in self.curves.values() if math.isfinite(c.eval_loss))

    def total_seconds(self, charge: str = "wall") -> float:
        """What training every configuration to its end cost: the full grid's GPU-seconds."""
        return sum(c.cost(len(c.points), charge) for c in self.curves.values())

    def choices(self, name: str) -> list:
        return sorted({c.params[name] for c in self.curves.values()})

    def space(self, rslora_only_for_r: list[int] | None = None, lr_range: bool = False):
        """The SearchSpace a study file would declare for this grid (epochs as an integer range).

        ``rslora_only_for_r`` makes rsLoRA conditional, as in ``studies/full-space.yaml``.
        ``lr_range`` declares the learning rate as a log range, as real study files do, reaching half a
        grid step beyond the recorded rates so each owns an equal share; the replay then answers a rate
        with the nearest recorded one (``lookup(..., snap_lr=True)``).
        """
        from sweep.schema.search_space import SearchSpace

        epochs = self.choices("num_train_epochs")
        rslora = {"choices": self.choices("use_rslora")}
        if rslora_only_for_r is not None:
            rslora["only_for_r"] = rslora_only_for_r
        rates = self.choices("learning_rate")
        half_step = math.sqrt(rates[1] / rates[0]) if len(rates) > 1 else 1.0
        learning_rate = {"low": rates[0] / half_step, "high": min(1.0, rates[-1] * half_step), "log": True} \
            if lr_range else {"choices": rates}
        return SearchSpace.model_validate({
            "learning_rate": learning_rate,
            "num_train_epochs": {"low": epochs[0], "high": epochs[-1]},
            "r": {"choices": self.choices("r")},
            "lora_alpha": {"alpha_per_rank": self.choices("alpha_per_rank")},
            "use_rslora": rslora,
        })


@dataclass
class ReplayObjective:
    """Optuna objective answering from a :class:`CurveTable`; keeps the GPU-seconds it has charged.

    Args:
        table: the recorded curves.
        space: the study's search space (its values must all be in the table).
        report_points: report eval point k as step k (the sweep's design); False reports the global
            step instead, as a study with ``training.eval_steps`` does.
        charge: ``wall`` (the trainer's recorded wall time) or ``train`` (training time only).
    """

    table: CurveTable
    space: object
    report_points: bool = True
    charge: str = "wall"
    spent_seconds: float = 0.0
    best_value: float = math.inf
    log: list[dict] = field(default_factory=list)
    study: object = None  # the Optuna study, set by replay_study

    def __call__(self, trial) -> float:
        import optuna

        from sweep.run.eval_reporter import EvalReporter
        from sweep.run.repeats import earlier_trial, repeat_outcome

        values = self.space.sample(trial)
        trial.set_user_attr(LORA_ALPHA, values["lora_alpha"])
        trial.set_user_attr(USE_RSLORA, values["use_rslora"])
        earlier = earlier_trial(trial)
        if earlier is not None:  # as the real objective: a configuration that ran is not trained again
            self._charge(trial, values, 0.0, earlier.value, repeat=True)
            return repeat_outcome(trial, earlier)
        curve = self.table.lookup(values, snap_lr=self.space.learning_rate.choices is None)
        reporter = EvalReporter(trial)
        for k, p in enumerate(curve.points, start=1):
            if reporter.evaluated(p["step"], p["eval_loss"], p["point"] if self.report_points else None):
                self._charge(trial, values, curve.cost(k, self.charge), None)
                raise optuna.TrialPruned()
        self._charge(trial, values, curve.cost(len(curve.points), self.charge), curve.eval_loss)
        return curve.eval_loss

    def _charge(self, trial, values: dict, seconds: float, value: float | None, repeat: bool = False) -> None:
        self.spent_seconds += seconds
        if value is not None and value < self.best_value:
            self.best_value = value
        trial.set_user_attr(WALL_SECONDS, seconds)
        self.log.append({"number": trial.number, "values": values, "value": value, "seconds": seconds,
                         "spent": self.spent_seconds, "best": self.best_value, "repeat": repeat})


def replay_study(search, table: CurveTable, budget_seconds: float | None = None, stop=None,
                 report_points: bool = True, charge: str = "wall", storage=None) -> ReplayObjective:
    """Run a study over recorded curves as ``sweep run`` runs a real one; returns the objective.

    The sampler, pruner and enqueued configurations come from ``search`` (a study file's
    ``search`` section) through the same builders as a real run. It ends after ``search.n_trials``
    finished trials, once ``budget_seconds`` are charged, or when ``stop(objective)`` says so.
    """
    import optuna

    from sweep.schema.pruners import build_pruner
    from sweep.schema.samplers import build_sampler, grid_size

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(storage=storage, sampler=build_sampler(search.sampler, search.params),
                                pruner=build_pruner(search.pruner), direction="minimize")
    for entry in search.enqueue:
        study.enqueue_trial(search.params.to_optuna_params(entry), skip_if_exists=True)
    objective = ReplayObjective(table, search.params, report_points, charge)

    def done(s, trial) -> None:
        if (budget_seconds is not None and objective.spent_seconds >= budget_seconds) or (stop and stop(objective)):
            s.stop()

    n_trials = search.n_trials
    if search.sampler.name == "grid":  # as sweep run counts a grid study: its points, at most
        n_trials = min(n_trials, grid_size(search.params))
    study.optimize(objective, n_trials=n_trials, callbacks=[done], gc_after_trial=False)
    objective.study = study
    return objective
