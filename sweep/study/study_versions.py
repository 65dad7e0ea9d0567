"""A study's identity and its versions: what keeps results right after a user edits the study file.

Each Optuna study the sweep creates gets an id (``sweep:uid``, a UUID in its system attributes).
Trial specs carry it, and a trainer resumes only checkpoints written under the same id
(:mod:`trainer.checkpoints`), so a study recreated over an old runs folder never inherits old runs.

The study also records its resolved study file (user attribute ``config``). A run with an edited file
compares the two key by key and names each change:

- changes that leave the finished trials meaningful go on: ``n_trials``, sampler, pruner, enqueue,
  samples, execution limits, trackers (``training.report_to``, ``logging_steps``);
- a changed search space (a wider range, an added choice...) cannot always go on in the same Optuna
  study (its categorical distributions are fixed once used), so the sweep continues in a new
  version of the study, ``NAME@v2``, that starts from a copy of the old version's finished trials
  that lie inside the new space, re-expressed in the new distributions: nothing is trained again.
  A ``lora:``/``training:`` setting that either version searches (``lora_dropout``, the batch, ...)
  belongs to the space: moving it between its section and ``search.params`` is a space change too;
- a changed objective (``search.objective``) likewise: Optuna fixes a study's directions, and the old
  values score another thing. The new version gets the finished trials whose values for the new
  objective are known from what they recorded (:func:`sweep.study.objective_values.carried_values`:
  chrF and training seconds always; an eval loss only where it is that of the adapter the trial
  kept, so a trial that kept its last adapter has no ``best_eval``); the others stay in the old version;
- changes that make old trials incomparable (``model``, ``data``, ``lora``, ``training``,
  ``execution.backend``, and ``samples`` where chrF is an objective) are refused in one line that
  names the keys and the way out.

Versions are linked (``sweep:next_version`` on the older one); every command follows the link to the
newest version, and the trials of version ``k >= 2`` live in ``trials/vK-NNNNN``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState
from pydantic import BaseModel, TypeAdapter

from sweep.errors import UserError
from sweep.schema.objectives import DEFAULT, Objectives
from sweep.schema.study_file import Study, StudyFile
from sweep.schema.study_space import StudySpace, same_settings, searched_section_keys
from sweep.study.objective_values import carried_values
from sweep.study.optuna_internals import contains, set_metric_names, set_system_attr, storage_of, system_attrs
from sweep.study.trial_attrs import CONFIG, COPIED_FROM, STUDY_FILE

UID = "sweep:uid"
VERSION = "sweep:version"
NEXT_VERSION = "sweep:next_version"
RUNS_STARTED = "sweep:runs_started"  # how many runs (workers) have joined the study
INCOMPARABLE = ("model.", "data.", "lora.", "training.", "execution.backend")
REPORTING_ONLY = ("training.report_to", "training.logging_steps")  # change what is reported, not what is trained
IGNORED = ("description",)


@dataclass(frozen=True)
class Identity:
    """Which study (version) a run works on: its id and version number."""

    uid: str
    version: int

    @property
    def trial_prefix(self) -> str:
        """Prefix of the trial folders of this version: none for the first."""
        return "" if self.version == 1 else f"v{self.version}-"


def base_name(name: str) -> str:
    return name.split("@v", 1)[0]


def latest(storage, name: str) -> str:
    """The newest version of the study ``name`` (``name`` itself if it was never re-versioned)."""
    while True:
        following = storage.get_study_system_attrs(storage.get_study_id_from_name(name)).get(NEXT_VERSION)
        if following is None:
            return name
        name = following


def newest_version(optuna_study: optuna.Study, reopen) -> optuna.Study:
    """The newest version of ``optuna_study``: itself, or ``reopen(name)`` of the version it leads to."""
    name = latest(storage_of(optuna_study), optuna_study.study_name)
    return optuna_study if name == optuna_study.study_name else reopen(name)


def version_uids(storage, name: str) -> set[str]:
    """The ids of every version of the study ``name`` (from its first)."""
    uids, current = set(), base_name(name)
    while current is not None:
        attrs = storage.get_study_system_attrs(storage.get_study_id_from_name(current))
        if UID in attrs:
            uids.add(attrs[UID])
        current = attrs.get(NEXT_VERSION)
    return uids


def identity(optuna_study: optuna.Study) -> Identity:
    """The study's id, given to it now if it has none (a new study, or one made before ids)."""
    attrs = system_attrs(optuna_study)
    if UID not in attrs:
        set_system_attr(optuna_study, UID, uuid.uuid4().hex)
        attrs = system_attrs(optuna_study)
    return Identity(uid=attrs[UID], version=attrs.get(VERSION, 1))


@dataclass(frozen=True)
class Change:
    key: str
    old: object
    new: object

    def __str__(self) -> str:
        return f"{self.key}: {self.old!r} -> {self.new!r}"


def space_keys(old: dict, new: dict) -> set[str]:
    """The ``lora:``/``training:`` keys that the search space of either resolved study file decides."""
    return searched_section_keys(old["search"]["params"]) | searched_section_keys(new["search"]["params"])


def incomparable(found: list[Change], old: dict, new: dict, scored: tuple[str, ...] = ()) -> list[Change]:
    """The changes that make trials of ``old`` and ``new`` incomparable: a fixed setting of the trials, or a
    section named in ``scored`` (``samples.`` where chrF scores the answers)."""
    searched = space_keys(old, new)
    return [c for c in found if c.key.startswith(INCOMPARABLE + scored) and not c.key.startswith(REPORTING_ONLY)
            and c.key not in searched]


def changes(old: dict, new: dict, prefix: str = "") -> list[Change]:
    """Every key (dotted path) whose value differs between two resolved study files.

    A key the schema gained since ``old`` was recorded is no change while it holds its default.
    """
    found = []
    for key in sorted(set(old) | set(new)):
        a, b, path = old.get(key), new.get(key), f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            found += changes(a, b, f"{path}.")
        elif a != b and path not in IGNORED and not (key not in old and b == schema_default(path)):
            found.append(Change(path, a, b))
    return found


def schema_default(path: str):
    """The default of the study-file key ``path`` (dotted), as a resolved study file holds it; None if it has none."""
    model: type[BaseModel] = StudyFile
    *parents, last = path.split(".")
    for part in parents:
        field = model.model_fields.get(part)
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    field = model.model_fields.get(last)
    if field is None or field.is_required():
        return None
    return TypeAdapter(field.annotation).dump_python(field.get_default(call_default_factory=True), mode="json")


def recorded_config(optuna_study: optuna.Study) -> dict | None:
    """The resolved study file the study recorded (None: none yet), in today's shape: a study recorded before
    ``search.objective`` existed has ``search.metric``/``direction`` instead, and minimised the last eval loss."""
    recorded = optuna_study.user_attrs.get(CONFIG)
    if recorded is None or "objective" in recorded.get("search", {}):
        return recorded
    search = {k: v for k, v in recorded.get("search", {}).items() if k not in ("metric", "direction")}
    return {**recorded, "search": {**search, "objective": [DEFAULT]}}


def settle(optuna_study: optuna.Study, study: Study, pruner, say=print) -> optuna.Study:
    """Compare ``study`` with what the (newest version of the) study recorded; call inside the gate.

    Returns the study to run: the same one, or a new version for a changed search space or objective.
    Raises a UserError for changes that would make finished trials incomparable, and for a study file
    of another path and content that shares this study's name.
    """
    recorded, current = recorded_config(optuna_study), study.config.model_dump(mode="json")
    old_objectives, new_objectives = Objectives.of_study(optuna_study), Objectives(tuple(study.config.search.objective))
    directions_differ = [d.name.lower() for d in optuna_study.directions] != new_objectives.directions
    if recorded is None:  # created by a run that ended before recording its file
        if not directions_differ:
            return optuna_study
        return _new_version(optuna_study, study.config.space, study.config.space, old_objectives,
                            new_objectives, pruner, say)
    found = changes(recorded, current)
    if not found:
        return optuna_study
    keys = ", ".join(c.key for c in found)
    recorded_file = optuna_study.user_attrs.get(STUDY_FILE)
    if recorded_file and recorded_file != str(study.path):
        raise UserError(f"{study.path}: name: {study.name!r} is already the study of {recorded_file}, with other "
                        f"settings ({keys}); give this file another name: or run that one")
    scored = ("samples.",) if "chrf" in new_objectives.names + old_objectives.names else ()  # chrF of other answers
    refused = incomparable(found, recorded, current, scored)
    if refused:
        raise UserError(f"{study.path}: {'; '.join(map(str, refused))}: changed since the study's trials ran, "
                        "which would make them incomparable with new ones; start over with `python -m sweep run "
                        f"--study {study.name} --fresh` (moves the old runs aside) or give the study another name:")
    for change in found:
        say(f"study file changed since the last run: {change}")
    searched = space_keys(recorded, current)
    space_changed = any(c.key.startswith("search.params.") or c.key in searched for c in found)
    objective_changed = old_objectives != new_objectives or directions_differ
    if not (space_changed or objective_changed):
        return optuna_study
    if not optuna_study.get_trials(deepcopy=False) and not directions_differ:
        return optuna_study  # nothing to carry over, and the study takes the new objective as it is
    return _new_version(optuna_study, StudySpace.recorded(recorded), study.config.space, old_objectives,
                        new_objectives, pruner, say)


def _new_version(old: optuna.Study, old_space: StudySpace, new_space: StudySpace, old_objectives: Objectives,
                 new_objectives: Objectives, pruner, say) -> optuna.Study:
    attrs, storage = system_attrs(old), storage_of(old)
    version = attrs.get(VERSION, 1) + 1
    name = f"{base_name(old.study_name)}@v{version}"
    new = optuna.create_study(storage=storage, study_name=name, directions=new_objectives.directions, pruner=pruner,
                              load_if_exists=True)
    if new.get_trials(deepcopy=False):  # a run that died between creating and linking it: start it again
        optuna.delete_study(study_name=name, storage=storage)
        new = optuna.create_study(storage=storage, study_name=name, directions=new_objectives.directions,
                                  pruner=pruner)
    set_metric_names(new, new_objectives.labels)
    finished = old.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    copies, unscored = [], 0
    for trial in finished:
        scores = carried_values(trial, old_objectives, new_objectives) if trial.state == TrialState.COMPLETE else None
        if trial.state == TrialState.COMPLETE and scores is None:
            unscored += 1  # its value for the new objective is not known: it stays in the old version
            continue
        copy = copy_into_space(trial, old.study_name, old_space, new_space, scores=scores)
        if copy is not None:
            copies.append(copy)
    new.add_trials(copies)
    set_system_attr(new, UID, uuid.uuid4().hex)
    set_system_attr(new, VERSION, version)
    set_system_attr(new, RUNS_STARTED, attrs.get(RUNS_STARTED, 0))
    set_system_attr(old, NEXT_VERSION, name)  # last: the new version is complete before anyone follows the link
    outside = len(finished) - len(copies) - unscored
    what = " and ".join(w for w, changed in (("search space", old_space != new_space),
                                             ("objective", old_objectives != new_objectives)) if changed) or "objective"
    left = [f"{outside} outside the new space"] * bool(outside) + \
        [f"{unscored} without a value for {new_objectives.describe()}"] * bool(unscored)
    say(f"{what} changed: continuing in study {name} with {len(copies)} finished trials of {old.study_name} "
        f"copied" + (f" ({' and '.join(left)} stay in {old.study_name})" if left else ""))
    return new


def copy_into_space(trial: FrozenTrial, old_name: str, old_space: StudySpace, new_space: StudySpace,
                    mark: str = COPIED_FROM, scores: list[float] | None = None) -> FrozenTrial | None:
    """``trial`` re-expressed in the new space's distributions (user attr ``mark``: where it came from), or
    None if its configuration lies outside the new space. ``scores``: its values in the new study (default:
    its own).

    Inside means: the new space can sample parameters that train it with the same settings, in every
    setting that either space searches (the five essentials, and what each searches of lora:/training:).
    """
    try:
        settings = old_space.settings(old_space.params.sample(_Replay(trial.params)))
        replay = _Replay(new_space.params.to_optuna_params(new_space.values_of(settings)))
        again = new_space.settings(new_space.params.sample(replay))
    except (ValueError, KeyError):
        return None
    if not same_settings(settings, again, old_space.searched_settings() | new_space.searched_settings()):
        return None
    return FrozenTrial(
        number=0, trial_id=0, state=trial.state, value=None, values=scores if scores is not None else trial.values,
        datetime_start=trial.datetime_start, datetime_complete=trial.datetime_complete,
        params=replay.taken, distributions=replay.distributions,
        user_attrs={**trial.user_attrs, mark: f"{old_name}#{trial.number}"},
        system_attrs=trial.system_attrs, intermediate_values=trial.intermediate_values,
    )


class _Replay:
    """Stands in for an Optuna trial: answers each suggestion with a known value, noting its distribution."""

    def __init__(self, params: dict) -> None:
        self.params, self.taken, self.distributions = params, {}, {}

    def suggest_float(self, name, low, high, log=False):
        return self._take(name, FloatDistribution(low, high, log=log))

    def suggest_int(self, name, low, high, step=1):
        return self._take(name, IntDistribution(low, high, step=step))

    def suggest_categorical(self, name, choices):
        return self._take(name, CategoricalDistribution(choices))

    def _take(self, name, distribution):
        value = self.params[name]
        if not contains(distribution, value):
            raise ValueError(f"{name}={value!r} is outside {distribution}")
        self.taken[name], self.distributions[name] = value, distribution
        return value
