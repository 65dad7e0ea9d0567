"""The searched hyperparameters: how a study file declares them and how a trial samples them.

The five LoRA essentials are always in the space, each fixed (a plain value) or searched (a range
or choices): ``learning_rate``, ``num_train_epochs``, ``r``, ``lora_alpha``, ``use_rslora``.
``lora_alpha`` may also be searched as a multiple of the rank (``alpha_per_rank: [1, 2]``): Optuna
then samples the multiplier ``alpha_per_rank`` and the trial uses ``r * alpha_per_rank``.
``use_rslora`` may be searched only for some ranks (``only_for_r``); other ranks use ``false``.

Settings that study files fix in ``lora:`` and ``training:`` may be searched here instead, with a
range or choices (a fixed value stays in its section; naming one in both places is an error):
``lora_dropout``, ``target_modules`` (named presets, :mod:`sweep.schema.target_modules`),
``warmup_ratio``, ``lr_scheduler_type``, ``weight_decay``, ``per_device_train_batch_size`` and
``gradient_accumulation_steps``. ``effective_batch_size`` searches their product instead
(:mod:`sweep.schema.batch_split`). Every value a parameter can take (fixed, range ends, choices)
must be one the trainer accepts: the bounds are those of :mod:`trainer.spec`, checked here so that a
study never starts trials that cannot run.
"""

from __future__ import annotations

import math
import typing
from typing import Any

from pydantic import Field, model_validator

from sweep.schema.param_kinds import BoolParam, FloatParam, IntParam, NameParam, Param
from sweep.schema.target_modules import TargetModulesParam
from trainer.spec import LoraFixed, LoraSpec, Strict, TrainingFixed, TrainingSpec

CORE = ("learning_rate", "num_train_epochs", "r", "lora_alpha", "use_rslora")
EFFECTIVE_BATCH = "effective_batch_size"
BATCH_KEYS = ("per_device_train_batch_size", "gradient_accumulation_steps")  # what the effective batch sets


class AlphaParam(FloatParam):
    """``lora_alpha``: like a float, or ``{alpha_per_rank: [1, 2]}`` to search it as a multiple of r."""

    trainer_field = (LoraSpec, "lora_alpha")

    alpha_per_rank: list[float] | None = Field(None, min_length=1, description="Multipliers of r to choose from.")

    def _check(self) -> None:
        if self.alpha_per_rank is None:
            return super()._check()
        if self.value is not None or self.choices is not None or self.low is not None or self.high is not None:
            raise ValueError("give alpha_per_rank alone, without value, choices or low/high")
        if any(m <= 0 for m in self.alpha_per_rank):
            raise ValueError("alpha_per_rank multipliers must all be greater than 0")

    @property
    def searched(self) -> bool:
        return self.value is None

    def suggest_alpha(self, trial, r: int) -> float:
        if self.alpha_per_rank is not None:
            return r * trial.suggest_categorical("alpha_per_rank", self.alpha_per_rank)
        return self.suggest(trial, "lora_alpha")


class LearningRateParam(FloatParam):
    """``learning_rate``: a float the trainer accepts (greater than 0, at most 1)."""

    trainer_field = (TrainingSpec, "learning_rate")


class EpochsParam(IntParam):
    """``num_train_epochs``: an integer the trainer accepts."""

    trainer_field = (TrainingSpec, "num_train_epochs")


class RankParam(IntParam):
    """``r``: a LoRA rank the trainer accepts."""

    trainer_field = (LoraSpec, "r")


class DropoutParam(FloatParam):
    """``lora_dropout``: at least 0, below 1."""

    trainer_field = (LoraFixed, "lora_dropout")
    home = ("lora", "lora_dropout")


class WarmupRatioParam(FloatParam):
    """``warmup_ratio``: at least 0, below 1; 0 warms up for ``training.warmup_steps`` instead."""

    trainer_field = (TrainingFixed, "warmup_ratio")
    home = ("training", "warmup_ratio")


class WeightDecayParam(FloatParam):
    """``weight_decay``: at least 0."""

    trainer_field = (TrainingFixed, "weight_decay")
    home = ("training", "weight_decay")


class SchedulerParam(NameParam):
    """``lr_scheduler_type``: schedules the trainer knows (linear, cosine, constant, constant_with_warmup)."""

    trainer_field = (TrainingFixed, "lr_scheduler_type")
    home = ("training", "lr_scheduler_type")


class MicroBatchParam(IntParam):
    """``per_device_train_batch_size``: the micro-batch, searched directly."""

    trainer_field = (TrainingFixed, "per_device_train_batch_size")
    home = ("training", "per_device_train_batch_size")


class AccumulationParam(IntParam):
    """``gradient_accumulation_steps``: micro-batches per optimizer step, searched directly."""

    trainer_field = (TrainingFixed, "gradient_accumulation_steps")
    home = ("training", "gradient_accumulation_steps")


class EffectiveBatchParam(IntParam):
    """``effective_batch_size``: examples per optimizer step, split by :func:`sweep.schema.batch_split.split_batch`."""


def _optional(help: str):
    return Field(None, description=f"{help} Default: not searched (fixed in the study's lora:/training:).")


class SearchSpace(Strict):
    """The five LoRA essentials, each fixed or searched, and any lora:/training: settings searched instead of fixed."""

    learning_rate: LearningRateParam = Field(default_factory=lambda: LearningRateParam(value=2e-4),
                                             description="Peak learning rate.")
    num_train_epochs: EpochsParam = Field(default_factory=lambda: EpochsParam(value=1), description="Epochs.")
    r: RankParam = Field(default_factory=lambda: RankParam(value=16), description="LoRA rank.")
    lora_alpha: AlphaParam = Field(default_factory=lambda: AlphaParam(value=16), description="LoRA alpha.")
    use_rslora: BoolParam = Field(default_factory=lambda: BoolParam(value=False), description="Rank-stabilised LoRA.")
    lora_dropout: DropoutParam | None = _optional("Dropout on the LoRA path.")
    target_modules: TargetModulesParam | None = _optional("Presets of modules to adapt.")
    warmup_ratio: WarmupRatioParam | None = _optional("Fraction of steps warming up.")
    lr_scheduler_type: SchedulerParam | None = _optional("Learning-rate schedule.")
    weight_decay: WeightDecayParam | None = _optional("Weight decay.")
    per_device_train_batch_size: MicroBatchParam | None = _optional("Micro-batch size.")
    gradient_accumulation_steps: AccumulationParam | None = _optional("Gradient accumulation.")
    effective_batch_size: EffectiveBatchParam | None = Field(
        None, description="Micro-batch x accumulation, split with training.per_device_train_batch_size as the "
                          "largest micro-batch. Exclusive with searching those two."
    )

    @model_validator(mode="after")
    def _one_way_to_batch(self):
        if self.effective_batch_size is not None:
            direct = [name for name in BATCH_KEYS if getattr(self, name) is not None]
            if direct:
                raise ValueError(f"give effective_batch_size or {' and '.join(direct)}, not both: the effective "
                                 "batch sets the micro-batch and the accumulation")
        return self

    def sample(self, trial) -> dict[str, Any]:
        """The trial's values: the five essentials, then each other parameter the space names (by its name in
        Optuna: a preset's name, the effective batch)."""
        r = self.r.suggest(trial, "r")
        values = {
            "learning_rate": self.learning_rate.suggest(trial, "learning_rate"),
            "num_train_epochs": self.num_train_epochs.suggest(trial, "num_train_epochs"),
            "r": r,
            "lora_alpha": self.lora_alpha.suggest_alpha(trial, r),
            "use_rslora": self.use_rslora.suggest(trial, "use_rslora", r),
        }
        for name in (*SECTION_PARAMS, EFFECTIVE_BATCH):
            param = getattr(self, name)
            if param is not None:
                values[name] = param.suggest(trial, name)
        return values

    def searched_names(self) -> list[str]:
        """The names of the parameters Optuna samples."""
        names = [n for n in ("learning_rate", "num_train_epochs", "r", "use_rslora") if getattr(self, n).searched]
        if self.lora_alpha.alpha_per_rank is not None:
            names.append("alpha_per_rank")
        elif self.lora_alpha.searched:
            names.append("lora_alpha")
        return names + [n for n in (*SECTION_PARAMS, EFFECTIVE_BATCH) if getattr(self, n) is not None
                        and getattr(self, n).searched]

    def to_optuna_params(self, values: dict[str, Any]) -> dict[str, Any]:
        """A user's configuration (as in ``enqueue``) as Optuna parameters; raises ValueError if outside."""
        params = {}
        for name, value in values.items():
            if name == "lora_alpha" and self.lora_alpha.alpha_per_rank is not None:
                r = values.get("r", self.r.value)
                if r is None:
                    raise ValueError("lora_alpha with alpha_per_rank needs r in the same entry")
                multiple = value / r
                if not any(math.isclose(multiple, m) for m in self.lora_alpha.alpha_per_rank):
                    raise ValueError(f"lora_alpha={value} is r * {multiple:g}, not one of alpha_per_rank "
                                     f"{self.lora_alpha.alpha_per_rank}")
                params["alpha_per_rank"] = next(m for m in self.lora_alpha.alpha_per_rank if math.isclose(multiple, m))
                continue
            param = getattr(self, name)
            if param is None:
                where = f" (it is fixed in {SECTION_PARAMS[name]}:)" if name in SECTION_PARAMS else ""
                raise ValueError(f"{name} is not searched in this study{where}; name only parameters that "
                                 "search.params has")
            if not param.contains(value):
                raise ValueError(f"{name}={value!r} is outside the search space")
            if param.searched:
                params[name] = param.as_param(value)
        return params


def _section_params() -> dict[str, str]:
    """``{setting: section}`` of the space's lora:/training: settings (the kinds with a ``home``), in field order."""
    found = {}
    for name, field in SearchSpace.model_fields.items():
        kind = next(t for t in (*typing.get_args(field.annotation), field.annotation) if isinstance(t, type))
        if issubclass(kind, Param) and kind.home is not None:
            section, key = kind.home
            if key != name:  # a developer's slip, caught at import
                raise TypeError(f"{kind.__name__}.home names {key}, but its field in SearchSpace is {name}")
            found[name] = section
    return found


# searchable settings of the lora:/training: sections, in the order a trial samples them
SECTION_PARAMS = _section_params()
