"""A configuration that already completed is not trained again: the trial takes the earlier result.

Samplers propose configurations they have tried before, often in the discrete spaces LoRA sweeps
use (rank choices, alpha as a multiple of rank, a few epoch counts): on the recorded tiny-model
grid, about a third of TPE's trials repeated a completed configuration (``docs/pruning.md``).
The trainer is seeded (``training.seed``), so a repeat would reproduce the same run at full cost.
Both objectives, the real one and the replay, call :func:`earlier_result` right after sampling;
a repeat completes at once with the earlier value and a ``repeat_of`` user attribute, so the sampler
still sees an observation there, and it counts towards ``n_trials`` like any finished trial.

Repeats of a *pruned* configuration are trained again: the pruner decides afresh, against what the
study knows now.
"""

from __future__ import annotations

REPEAT_OF = "repeat_of"  # user attr: the number of the trial whose result this one took


def earlier_result(trial) -> float | None:
    """If a completed trial of the study had exactly these parameters, record it and return its value."""
    from optuna.trial import TrialState

    for other in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if other.number != trial.number and other.params == trial.params:
            trial.set_user_attr(REPEAT_OF, other.user_attrs.get(REPEAT_OF, other.number))
            return other.value
    return None
