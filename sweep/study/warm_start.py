"""Warm start: a new study begins with the finished trials of an earlier one, so its sampler starts informed.

    search:
      warm_start: {study: lr-rank}        # its newest version, in RUNS_DIR/lr-rank/study.db (or storage:)

On the study's first run, every COMPLETE or PRUNED trial of the earlier study whose configuration lies
inside this study's search space is copied in (Optuna's ``add_trials``), re-expressed in this space's
distributions, with its eval history and user attributes and ``warm_start_from: "NAME#NUMBER"``. Nothing is
trained again. The copies do not count towards ``n_trials``: the study still trains ``n_trials`` trials of
its own. Where the two studies differ in model, data, LoRA or training settings the run says so: the
copied losses then guide the sampler but were measured on another task.
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from sweep.errors import UserError
from sweep.schema.objectives import Objectives
from sweep.schema.study_file import Study
from sweep.schema.study_space import StudySpace
from sweep.study.storage import default_storage_url, open_study
from sweep.study.study_versions import changes, copy_into_space, incomparable, newest_version, recorded_config
from sweep.study.trial_attrs import WARM_START_FROM, WARM_START_TRIALS


def copied_count(optuna_study: optuna.Study) -> int:
    """Trials that a warm start copied into ``optuna_study`` (they do not count towards ``n_trials``)."""
    return sum(WARM_START_FROM in t.user_attrs for t in optuna_study.get_trials(deepcopy=False))


def _source_url(study: Study, runs_dir, storage: str | None) -> str:
    source = study.config.search.warm_start
    return source.storage or storage or default_storage_url(runs_dir, source.study)


def check_source(study: Study, runs_dir, storage: str | None) -> None:
    """Before the study exists: the earlier study to warm-start from must exist and share this study's
    objective (nothing is created)."""
    from sweep.study.trial_folders import study_exists

    source = study.config.search.warm_start
    if source is None:
        return
    url = _source_url(study, runs_dir, storage)
    if not study_exists(url, source.study):
        raise UserError(f"{study.path}: search.warm_start.study: {source.study!r}: no such study in {url}; "
                        "run it first or give its storage:")
    earlier = newest_version(open_study(url, source.study, create=False),
                             lambda name: open_study(url, name, create=False))
    theirs, ours = Objectives.of_study(earlier), Objectives(tuple(study.config.search.objective))
    if theirs != ours:
        raise UserError(f"{study.path}: search.warm_start.study: {source.study!r} is scored on {theirs.describe()}, "
                        f"this study on {ours.describe()}: a warm start copies the values as they are, so only a "
                        "study of the same objective can start this one; run without warm_start or with one")


def warm_start(optuna_study: optuna.Study, study: Study, runs_dir, storage: str | None, say=print) -> None:
    """Copy the earlier study's trials into a study that has none yet; call inside the gate."""
    source = study.config.search.warm_start
    if source is None or WARM_START_TRIALS in optuna_study.user_attrs or optuna_study.get_trials(deepcopy=False):
        return
    url = _source_url(study, runs_dir, storage)
    try:
        earlier = open_study(url, source.study, create=False)
    except UserError as e:
        raise UserError(f"{study.path}: search.warm_start.study: {source.study!r}: {e}") from None
    earlier = newest_version(earlier, lambda name: open_study(url, name, create=False))
    name = earlier.study_name
    recorded = recorded_config(earlier)
    if recorded is None:
        raise UserError(f"{study.path}: search.warm_start.study: {source.study!r} was not made by the sweep "
                        "(it records no study file)")
    old_space = StudySpace.recorded(recorded)
    finished = earlier.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    copies = [c for c in (copy_into_space(t, name, old_space, study.config.space, WARM_START_FROM)
                          for t in finished) if c is not None]
    optuna_study.add_trials(copies)
    optuna_study.set_user_attr(WARM_START_TRIALS, len(copies))
    current = study.config.model_dump(mode="json")
    differ = [c.key for c in incomparable(changes(recorded, current), recorded, current)]
    say(f"warm start: {len(copies)} of {len(finished)} finished trials of {name} copied in (those inside this "
        "space); they do not count towards n_trials"
        + (f"; note that {', '.join(differ[:4])}{', ...' if len(differ) > 4 else ''} differ, so their losses "
           "were measured on another task" if differ else ""))
