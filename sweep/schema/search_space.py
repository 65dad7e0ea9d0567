"""The searched hyperparameters: how a study file declares them and how a trial samples them.

Each of the five parameters is either fixed (a plain value) or searched (a range or choices).
``lora_alpha`` may also be searched as a multiple of the rank (``alpha_per_rank: [1, 2]``): Optuna
then samples the multiplier ``alpha_per_rank`` and the trial uses ``r * alpha_per_rank``.
``use_rslora`` may be searched only for some ranks (``only_for_r``); other ranks use ``false``.
Every value a parameter can take (fixed, range ends, choices) must be one the trainer accepts: the
bounds are those of :class:`trainer.spec.TrainingSpec` and :class:`trainer.spec.LoraSpec`, checked
here so that a study never starts trials that cannot run.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, Field, TypeAdapter, ValidationError, field_validator, model_validator

from trainer.spec import LoraSpec, Strict, TrainingSpec


def _scalar_to_value(data: Any) -> Any:
    return data if isinstance(data, dict) else {"value": data}


@cache
def _trainer_field(model: type[BaseModel], name: str) -> TypeAdapter:
    field = model.model_fields[name]
    return TypeAdapter(Annotated[field.annotation, field])


class _Param(Strict):
    trainer_field: ClassVar[tuple[type[BaseModel], str] | None] = None  # the spec field whose bounds apply

    @model_validator(mode="before")
    @classmethod
    def _fixed_shorthand(cls, data: Any) -> Any:
        return _scalar_to_value(data)

    @field_validator("value", "low", "high", "choices", check_fields=False)
    @classmethod
    def _trainer_accepts(cls, v: Any) -> Any:
        if cls.trainer_field is None or v is None:
            return v
        model, name = cls.trainer_field
        for item in v if isinstance(v, list) else [v]:
            try:
                _trainer_field(model, name).validate_python(item)
            except ValidationError as e:
                problem = e.errors()[0]["msg"].removeprefix("Input ")
                which = f" ({item} is not)" if item != v else ""
                raise ValueError(f"{name} {problem}, the trainer's limit{which}") from None
        return v

    @property
    def searched(self) -> bool:
        return getattr(self, "value", None) is None


class _Number(_Param):
    """A number that is fixed (``value``), chosen from ``choices``, or drawn from a range (the subclass's)."""

    def suggest(self, trial, name: str):
        """The trial's value: the fixed one, or one Optuna suggests under ``name``."""
        if self.value is not None:
            return self.value
        if self.choices is not None:
            return trial.suggest_categorical(name, self.choices)
        return self._suggest_range(trial, name)

    def contains(self, v) -> bool:
        """Whether ``v`` is a value this parameter can take."""
        if self.value is not None:
            return self._same(v, self.value)
        if self.choices is not None:
            return any(self._same(v, c) for c in self.choices)
        return self._in_range(v)


class FloatParam(_Number):
    """A float: ``2e-4`` (fixed), ``{low, high, log}`` (range) or ``{choices: [...]}``."""

    value: float | None = Field(None, gt=0, description="Fixed value.")
    low: float | None = Field(None, gt=0, description="Lower bound of the range.")
    high: float | None = Field(None, gt=0, description="Upper bound of the range.")
    log: bool = Field(False, description="Sample the range log-uniformly.")
    choices: list[float] | None = Field(None, min_length=1, description="Values to choose from.")

    @model_validator(mode="after")
    def _one_form(self):
        self._check()
        return self

    def _check(self) -> None:
        _check_form(self.value, (self.low, self.high), self.choices)
        if self.choices is not None and any(c <= 0 for c in self.choices):
            raise ValueError("choices must all be greater than 0")

    def _suggest_range(self, trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def _same(self, a: float, b: float) -> bool:
        return math.isclose(a, b)

    def _in_range(self, v: float) -> bool:
        return self.low <= v <= self.high


class IntParam(_Number):
    """An integer: ``3`` (fixed), ``{low, high, step}`` (range) or ``{choices: [...]}``."""

    value: int | None = Field(None, ge=1, description="Fixed value.")
    low: int | None = Field(None, ge=1, description="Lower bound of the range (inclusive).")
    high: int | None = Field(None, ge=1, description="Upper bound of the range (inclusive).")
    step: int = Field(1, ge=1, description="Step of the range.")
    choices: list[int] | None = Field(None, min_length=1, description="Values to choose from.")

    @model_validator(mode="after")
    def _one_form(self):
        _check_form(self.value, (self.low, self.high), self.choices)
        if self.choices is not None and any(c < 1 for c in self.choices):
            raise ValueError("choices must all be at least 1")
        return self

    def _suggest_range(self, trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, step=self.step)

    def _same(self, a: int, b: int) -> bool:
        return a == b

    def _in_range(self, v: int) -> bool:
        return self.low <= v <= self.high and (v - self.low) % self.step == 0


class AlphaParam(FloatParam):
    """``lora_alpha``: like a float, or ``{alpha_per_rank: [1, 2]}`` to search it as a multiple of r."""

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


class BoolParam(_Param):
    """A flag: ``true``/``false`` (fixed) or ``{choices: [true, false]}``; ``only_for_r`` limits the search."""

    value: bool | None = Field(None, description="Fixed value.")
    choices: list[bool] | None = Field(None, min_length=1, description="Values to choose from.")
    only_for_r: list[int] | None = Field(None, min_length=1, description="Search only at these ranks; else false.")

    @model_validator(mode="after")
    def _one_form(self):
        _check_form(self.value, (None, None), self.choices)
        return self

    def suggest(self, trial, name: str, r: int) -> bool:
        if self.value is not None:
            return self.value
        if self.only_for_r is not None and r not in self.only_for_r:
            return False
        return trial.suggest_categorical(name, self.choices)

    def contains(self, v: bool) -> bool:
        return v == self.value if self.value is not None else v in self.choices


def _check_form(value, bounds, choices) -> None:
    low, high = bounds
    forms = [value is not None, low is not None or high is not None, choices is not None]
    if sum(forms) != 1:
        raise ValueError("give exactly one of: a fixed value, low and high, or choices")
    if forms[1]:
        if low is None or high is None:
            raise ValueError("a range needs both low and high")
        if low > high:
            raise ValueError(f"low must not exceed high, but got low={low}, high={high}")


class SearchSpace(Strict):
    """The five hyperparameters; each fixed or searched."""

    learning_rate: LearningRateParam = Field(default_factory=lambda: LearningRateParam(value=2e-4),
                                             description="Peak learning rate.")
    num_train_epochs: EpochsParam = Field(default_factory=lambda: EpochsParam(value=1), description="Epochs.")
    r: RankParam = Field(default_factory=lambda: RankParam(value=16), description="LoRA rank.")
    lora_alpha: AlphaParam = Field(default_factory=lambda: AlphaParam(value=16), description="LoRA alpha.")
    use_rslora: BoolParam = Field(default_factory=lambda: BoolParam(value=False), description="Rank-stabilised LoRA.")

    def sample(self, trial) -> dict[str, Any]:
        """The trial's resolved values: learning_rate, num_train_epochs, r, lora_alpha, use_rslora."""
        r = self.r.suggest(trial, "r")
        return {
            "learning_rate": self.learning_rate.suggest(trial, "learning_rate"),
            "num_train_epochs": self.num_train_epochs.suggest(trial, "num_train_epochs"),
            "r": r,
            "lora_alpha": self.lora_alpha.suggest_alpha(trial, r),
            "use_rslora": self.use_rslora.suggest(trial, "use_rslora", r),
        }

    def searched_names(self) -> list[str]:
        names = [n for n in ("learning_rate", "num_train_epochs", "r", "use_rslora") if getattr(self, n).searched]
        if self.lora_alpha.alpha_per_rank is not None:
            names.append("alpha_per_rank")
        elif self.lora_alpha.searched:
            names.append("lora_alpha")
        return names

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
            if not param.contains(value):
                raise ValueError(f"{name}={value!r} is outside the search space")
            if param.searched:
                params[name] = value
        return params
