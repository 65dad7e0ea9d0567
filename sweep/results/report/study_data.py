"""What the report shows, taken from the study: complete trials best first, their curves, and which
parameters actually varied (importances and slices need more than one value of a parameter).

A multi-objective study has no one best trial: its Pareto front (the trials no other beats on every
metric) comes first, and takes the best trial's place in the report."""

from __future__ import annotations

from dataclasses import dataclass, field

from sweep.schema.objectives import Objectives, front
from sweep.study.trial_attrs import EVAL_LOSSES, SAMPLES

MIN_TRIALS_FOR_IMPORTANCE = 2


@dataclass
class StudyData:
    """The trials of one study, sorted and grouped for the report."""

    name: str
    description: str
    trials: list  # every trial, by number
    complete: list  # COMPLETE trials, best first (a multi-objective study: its Pareto front first)
    base: str | None = None  # how the base model did before training (sweep.run.base_model), if measured
    objectives: Objectives = field(default_factory=Objectives)
    front: list = field(default_factory=list)  # the best trial, or the Pareto front

    @property
    def best(self):
        return self.complete[0]

    def on_front(self, trial) -> bool:
        """Whether ``trial`` is the best trial (single metric) or on the Pareto front (several)."""
        return any(trial.number == best.number for best in self.front)

    def curves(self) -> list[tuple[object, list[int], list[float]]]:
        """``(trial, steps, eval losses)`` for every trial that reported an evaluation."""
        found = []
        for trial in self.trials:
            points = trial.user_attrs.get(EVAL_LOSSES) or []
            if points:
                found.append((trial, [int(step) for step, _ in points], [float(loss) for _, loss in points]))
        return found

    def searched_params(self) -> list[str]:
        """Names of the parameters Optuna sampled in the complete trials, in a stable order."""
        return sorted({name for trial in self.complete for name in trial.distributions})

    def varying_params(self) -> list[str]:
        """Searched parameters that took at least two values among the complete trials."""
        return [name for name in self.searched_params()
                if len({trial.params.get(name) for trial in self.complete if name in trial.params}) > 1]

    def importance_problem(self) -> str | None:
        """Why parameter importances cannot be computed, or None when they can."""
        if len(self.complete) < MIN_TRIALS_FOR_IMPORTANCE:
            return (f"parameter importances need at least {MIN_TRIALS_FOR_IMPORTANCE} complete trials; "
                    f"this study has {len(self.complete)}")
        if not self.varying_params():
            return "parameter importances need complete trials whose searched parameters differ; here they are all the same"
        return None

    def best_samples(self, how_many: int) -> list:
        """Up to ``how_many`` of the best complete trials that stored sample generations."""
        return [trial for trial in self.complete if trial.user_attrs.get(SAMPLES)][:how_many]


def study_data(optuna_study, name: str, description: str = "") -> StudyData:
    """Collect the trials of ``optuna_study`` for the report."""
    from optuna.trial import TrialState

    from sweep.run.base_model import base_line

    objectives = Objectives.of_study(optuna_study)
    trials = sorted(optuna_study.get_trials(deepcopy=False), key=lambda t: t.number)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = front(optuna_study)
    if objectives.multi:
        numbers = {t.number for t in best}
        complete = [t for t in complete if t.number in numbers] + [t for t in complete if t.number not in numbers]
    else:
        complete = objectives.ranked(complete)
    return StudyData(name=name, description=description, trials=trials, complete=complete,
                     base=base_line(optuna_study.user_attrs), objectives=objectives, front=best)
