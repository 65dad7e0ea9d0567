"""A study's search space together with the fixed ``lora:`` and ``training:`` sections it completes.

A trial trains with the fixed sections overridden by its sampled values: a preset's modules for a
``target_modules`` name, the micro-batch and accumulation of an effective batch. The objective builds
each trial's :class:`trainer.spec.TrialSpec` from :meth:`StudySpace.sections`; study versions and warm
starts compare trials of two studies by :meth:`StudySpace.settings`, so a trial is copied only into a
space that would train it the same way.

    space = study.config.space                 # or StudySpace.recorded(config_dict) for a recorded study
    lora, training = space.sections(space.params.sample(trial))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sweep.schema.batch_split import split_batch, split_problem
from sweep.schema.search_space import BATCH_KEYS, CORE, EFFECTIVE_BATCH, SECTION_PARAMS, SearchSpace
from trainer.spec import LoraFixed, LoraSpec, TrainingFixed, TrainingSpec

SETTINGS = (*CORE, *SECTION_PARAMS)  # what a space decides of a trial, by its trainer.spec names


@dataclass(frozen=True)
class StudySpace:
    """The search space and the fixed sections a trial's values complete."""

    params: SearchSpace
    lora: LoraFixed
    training: TrainingFixed

    @classmethod
    def recorded(cls, config: dict) -> StudySpace:
        """The space of a resolved study file as a study records it (its ``config`` user attribute)."""
        return cls(SearchSpace.model_validate(config["search"]["params"]),
                   LoraFixed.model_validate(config.get("lora", {})),
                   TrainingFixed.model_validate(config.get("training", {})))

    def problem(self) -> str | None:
        """Why the space and the sections do not fit together (a setting both searched and fixed, an effective
        batch that cannot be split), or None."""
        sections = {"lora": self.lora, "training": self.training}
        for name, section in SECTION_PARAMS.items():
            if getattr(self.params, name) is not None and name in sections[section].model_fields_set:
                return (f"search.params.{name} and {section}.{name}: {name} is searched and also fixed "
                        f"({getattr(sections[section], name)!r}); keep one of them")
        effective = self.params.effective_batch_size
        if effective is None:
            return None
        if "gradient_accumulation_steps" in self.training.model_fields_set:
            return ("search.params.effective_batch_size and training.gradient_accumulation_steps: the effective "
                    "batch sets the accumulation; drop training.gradient_accumulation_steps")
        max_micro = self.training.per_device_train_batch_size
        problem = next(filter(None, (split_problem(e, max_micro) for e in effective.values())), None)
        return f"search.params.effective_batch_size: {problem}" if problem else None

    def sections(self, values: dict[str, Any]) -> tuple[LoraSpec, TrainingSpec]:
        """The ``lora`` and ``training`` a trial with ``values`` (as :meth:`SearchSpace.sample` gives them) trains with."""
        lora = {k: v for k, v in values.items() if k in LoraSpec.model_fields}
        training = {k: v for k, v in values.items() if k in TrainingSpec.model_fields}
        if "target_modules" in lora:
            lora["target_modules"] = self.params.target_modules.modules(lora["target_modules"])
        if EFFECTIVE_BATCH in values:
            micro, accumulation = split_batch(values[EFFECTIVE_BATCH], self.training.per_device_train_batch_size)
            training.update(per_device_train_batch_size=micro, gradient_accumulation_steps=accumulation)
        return (LoraSpec(**{**self.lora.model_dump(), **lora}),
                TrainingSpec(**{**self.training.model_dump(), **training}))

    def first_sections(self) -> tuple[LoraSpec, TrainingSpec]:
        """The sections of the space's first configuration (each range's low end, each first choice): a valid
        trial setting where any will do, as for measuring the base model."""
        return self.sections(self.params.sample(_FirstOfEach()))

    def settings(self, values: dict[str, Any]) -> dict[str, Any]:
        """Every setting the space decides of a trial with ``values``."""
        lora, training = self.sections(values)
        return {k: getattr(lora if k in LoraSpec.model_fields else training, k) for k in SETTINGS}

    def searched_settings(self) -> set[str]:
        """The settings this space chooses per trial: the five essentials and whatever it searches of the sections."""
        names = set(CORE) | {n for n in SECTION_PARAMS if getattr(self.params, n) is not None}
        return names | (set(BATCH_KEYS) if self.params.effective_batch_size is not None else set())

    def values_of(self, settings: dict[str, Any]) -> dict[str, Any]:
        """The values of this space that would give ``settings`` (for :meth:`SearchSpace.to_optuna_params`)."""
        values = {k: settings[k] for k in CORE}
        values.update({k: settings[k] for k in SECTION_PARAMS if getattr(self.params, k) is not None})
        if self.params.effective_batch_size is not None:
            values[EFFECTIVE_BATCH] = math.prod(settings[k] for k in BATCH_KEYS)
        return values


def same_settings(a: dict[str, Any], b: dict[str, Any], names) -> bool:
    """Whether two trials' settings agree on ``names`` (floats to rounding, module lists in any order)."""
    for name in names:
        x, y = a[name], b[name]
        if isinstance(x, float) or isinstance(y, float):
            if not math.isclose(x, y):
                return False
        elif (sorted(x) if isinstance(x, list) else x) != (sorted(y) if isinstance(y, list) else y):
            return False
    return True


def searched_section_keys(params: dict) -> set[str]:
    """Keys of ``lora:``/``training:`` whose value a search space (as a resolved study file holds it) decides."""
    keys = {f"{section}.{name}" for name, section in SECTION_PARAMS.items() if params.get(name) is not None}
    if params.get(EFFECTIVE_BATCH) is not None:
        keys |= {f"training.{name}" for name in BATCH_KEYS}
    return keys


class _FirstOfEach:
    """Stands in for an Optuna trial: answers each suggestion with its range's low end or its first choice."""

    def suggest_float(self, name, low, high, log=False):
        return low

    def suggest_int(self, name, low, high, step=1):
        return low

    def suggest_categorical(self, name, choices):
        return choices[0]
