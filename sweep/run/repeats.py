"""A configuration that already ran is not trained again: the trial takes the earlier outcome.

Samplers propose configurations they have tried before, often in the discrete spaces LoRA sweeps
use (rank choices, alpha as a multiple of rank, a few epoch counts). On the recorded tiny-model grid
a third of TPE's trials repeated a completed configuration, and the GP sampler, which learns only
from completed trials, proposed pruned ones again and again (``docs/BENCHMARKS.md``). The trainer
is seeded (``training.seed``), so a repeat would reproduce the same run at full cost.

Both objectives, the real one and the replay, call :func:`earlier_trial` right after sampling and,
if it finds one, :func:`repeat_outcome` instead of training:

* a repeat of a **completed** configuration completes at once with the earlier value, or values in
  a multi-objective study (without its eval points, so the pruner's per-point statistics count each
  run once);
* a repeat of a **pruned** one is pruned again at once, after reporting the earlier trial's eval
  points (a multi-objective study takes no reports), so the sampler and pruner see the same curve. Its run would reproduce that curve, and a
  pruner that has since seen more trials rarely lets it further.

Either way the trial gets a ``repeat_of`` user attribute and counts towards ``n_trials``.
"""

from __future__ import annotations

from sweep.study.trial_attrs import EVAL_LOSSES, REPEAT_OF


def earlier_trial(trial):
    """The first completed trial with exactly this trial's parameters, else the first pruned one, else None.

    The first is always one that trained: a later repeat of it found it first.
    """
    from optuna.trial import TrialState

    for state in (TrialState.COMPLETE, TrialState.PRUNED):
        for other in trial.study.get_trials(deepcopy=False, states=(state,)):
            if other.number != trial.number and other.params == trial.params:
                return other
    return None


def outcome_of(trial) -> float | list[float] | None:
    """A finished trial's value, or its list of values in a multi-objective study (None if it has none)."""
    if trial.values is None:
        return None
    return trial.values if len(trial.values) > 1 else trial.values[0]


def repeat_outcome(trial, earlier) -> float | list[float]:
    """Give ``trial`` the outcome of ``earlier``: return its value(s), or raise TrialPruned as it was pruned."""
    import optuna

    trial.set_user_attr(REPEAT_OF, earlier.number)
    if earlier.state == optuna.trial.TrialState.COMPLETE:
        return outcome_of(earlier)
    if len(trial.study.directions) == 1:  # Optuna takes no reports in a multi-objective study
        for step, value in sorted(earlier.intermediate_values.items()):
            trial.report(value, step)
    trial.set_user_attr(EVAL_LOSSES, earlier.user_attrs.get(EVAL_LOSSES, []))
    raise optuna.TrialPruned()
