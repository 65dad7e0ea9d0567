"""The kinds of searched parameter: a float, an integer, a flag or a name, each fixed or searched.

A parameter is written in a study file as a plain value (fixed), a range ``{low, high}`` (floats
also ``log: true``, integers ``step``) or ``{choices: [...]}``; exactly one of the three. A kind
bound to a trainer field (``trainer_field``) accepts only values that field accepts: every fixed
value, range end and choice is checked against :mod:`trainer.spec` when the study file loads, so a
study never starts trials that cannot run. A kind with a ``home`` is a setting that study files
fix in that section (``lora:``, ``training:``): in ``search.params`` it takes a range or choices.

    class WarmupRatioParam(FloatParam):
        trainer_field = (TrainingFixed, "warmup_ratio")   # 0 <= ratio < 1
        home = ("training", "warmup_ratio")

    WarmupRatioParam.model_validate({"low": 0.0, "high": 0.2}).suggest(trial, "warmup_ratio")
"""

from __future__ import annotations

import math
from functools import cache
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, Field, TypeAdapter, ValidationError, field_validator, model_validator

from trainer.spec import Strict


def _scalar_to_value(data: Any) -> Any:
    return data if isinstance(data, dict) else {"value": data}


@cache
def _trainer_field(model: type[BaseModel], name: str) -> TypeAdapter:
    field = model.model_fields[name]
    return TypeAdapter(Annotated[field.annotation, field])


def check_form(value, bounds, choices) -> None:
    """Exactly one of a fixed value, a range (``bounds``: low, high) or choices; a range in order."""
    low, high = bounds
    forms = [value is not None, low is not None or high is not None, choices is not None]
    if sum(forms) != 1:
        raise ValueError("give exactly one of: a fixed value, low and high, or choices")
    if forms[1]:
        if low is None or high is None:
            raise ValueError("a range needs both low and high")
        if low > high:
            raise ValueError(f"low must not exceed high, but got low={low}, high={high}")


class Param(Strict):
    """Base of every kind: the fixed shorthand, the trainer's bounds, and the study-file section it belongs to."""

    trainer_field: ClassVar[tuple[type[BaseModel], str] | None] = None  # the spec field whose bounds apply
    home: ClassVar[tuple[str, str] | None] = None  # (section, key) that holds this setting when it is fixed

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
                which = f" ({item!r} is not)" if item != v else ""
                raise ValueError(f"{name} {problem}, the trainer's limit{which}") from None
        return v

    @model_validator(mode="after")
    def _searched_where_it_has_a_home(self):
        if self.home is not None and getattr(self, "value", None) is not None:
            section, key = self.home
            raise ValueError(f"a fixed {key} belongs in {section}: ({key}: {self.value}); in search.params give "
                             "a range {low, high} or {choices: [...]}")
        return self

    @property
    def searched(self) -> bool:
        return getattr(self, "value", None) is None

    def as_param(self, v: Any) -> Any:
        """``v`` as Optuna records it for this parameter."""
        return v


class _Number(Param):
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
    """A float: ``2e-4`` (fixed), ``{low, high, log}`` (range) or ``{choices: [...]}``; its bounds are its trainer field's."""

    value: float | None = Field(None, description="Fixed value.")
    low: float | None = Field(None, description="Lower bound of the range.")
    high: float | None = Field(None, description="Upper bound of the range.")
    log: bool = Field(False, description="Sample the range log-uniformly.")
    choices: list[float] | None = Field(None, min_length=1, description="Values to choose from.")

    @model_validator(mode="after")
    def _one_form(self):
        self._check()
        return self

    def _check(self) -> None:
        check_form(self.value, (self.low, self.high), self.choices)
        if self.log and self.low is not None and self.low <= 0:
            raise ValueError(f"a log range needs low greater than 0, but got low={self.low}")

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
        check_form(self.value, (self.low, self.high), self.choices)
        if self.choices is not None and any(c < 1 for c in self.choices):
            raise ValueError("choices must all be at least 1")
        return self

    def values(self) -> list[int]:
        """Every value the parameter can take."""
        if self.value is not None:
            return [self.value]
        return list(self.choices) if self.choices is not None else list(range(self.low, self.high + 1, self.step))

    def _suggest_range(self, trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, step=self.step)

    def _same(self, a: int, b: int) -> bool:
        return a == b

    def _in_range(self, v: int) -> bool:
        return self.low <= v <= self.high and (v - self.low) % self.step == 0


class BoolParam(Param):
    """A flag: ``true``/``false`` (fixed) or ``{choices: [true, false]}``; ``only_for_r`` limits the search."""

    value: bool | None = Field(None, description="Fixed value.")
    choices: list[bool] | None = Field(None, min_length=1, description="Values to choose from.")
    only_for_r: list[int] | None = Field(None, min_length=1, description="Search only at these ranks; else false.")

    @model_validator(mode="after")
    def _one_form(self):
        check_form(self.value, (None, None), self.choices)
        return self

    def suggest(self, trial, name: str, r: int) -> bool:
        if self.value is not None:
            return self.value
        if self.only_for_r is not None and r not in self.only_for_r:
            return False
        return trial.suggest_categorical(name, self.choices)

    def contains(self, v: bool) -> bool:
        return v == self.value if self.value is not None else v in self.choices


class NameParam(Param):
    """A name from a fixed set (the trainer field's ``Literal``): ``{choices: [linear, cosine]}``."""

    value: str | None = Field(None, description="Fixed value.")
    choices: list[str] | None = Field(None, min_length=1, description="Names to choose from.")

    @model_validator(mode="after")
    def _one_form(self):
        check_form(self.value, (None, None), self.choices)
        return self

    def suggest(self, trial, name: str) -> str:
        return self.value if self.value is not None else trial.suggest_categorical(name, self.choices)

    def contains(self, v: str) -> bool:
        return v == self.value if self.value is not None else v in self.choices
