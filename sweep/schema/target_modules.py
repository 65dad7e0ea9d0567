"""Which modules LoRA adapts, searched by name: ``target_modules: {choices: [attention, all_linear]}``.

Optuna's choices are plain values, not lists, so the search picks among named sets of modules
(presets). Built in, for Llama-style decoders (Llama, Mistral, Qwen, SmolLM, ...):

- ``attention``: ``q_proj, k_proj, v_proj, o_proj``;
- ``mlp``: ``gate_proj, up_proj, down_proj``;
- ``all_linear``: all seven (the default of ``lora.target_modules``).

A study may name its own under ``presets`` (for other architectures' module names)::

    target_modules: {choices: [qv, all_linear], presets: {qv: [q_proj, v_proj]}}

The trial records the preset's name as its parameter; its ``spec.json`` and adapter hold the modules.
"""

from __future__ import annotations

import difflib

from pydantic import Field, ValidationInfo, field_validator, model_validator

from sweep.schema.param_kinds import Param, check_form
from trainer.spec import SEVEN_PROJECTIONS

TARGET_PRESETS: dict[str, list[str]] = {
    "attention": SEVEN_PROJECTIONS[:4],
    "mlp": SEVEN_PROJECTIONS[4:],
    "all_linear": list(SEVEN_PROJECTIONS),
}


class TargetModulesParam(Param):
    """``target_modules``: ``{choices: [preset, ...]}``, presets built in or defined under ``presets``."""

    home = ("lora", "target_modules")

    presets: dict[str, list[str]] = Field(
        default_factory=dict, description="Your own presets: name -> module names (besides attention, mlp, all_linear)."
    )
    value: str | list[str] | None = Field(None, description="Fixed value (belongs in lora:, not here).")
    choices: list[str] | None = Field(None, min_length=1, description="Preset names to choose from.")

    @field_validator("presets")
    @classmethod
    def _new_names_of_modules(cls, presets: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, modules in presets.items():
            if name in TARGET_PRESETS:
                raise ValueError(f"{name!r} is a built-in preset ({', '.join(TARGET_PRESETS[name])}); give yours another name")
            if not modules:
                raise ValueError(f"preset {name!r} names no modules")
        return presets

    @field_validator("choices")
    @classmethod
    def _known_presets(cls, choices: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if "presets" not in info.data:  # they are wrong themselves: one error, not one per choice as well
            return choices
        known = [*TARGET_PRESETS, *info.data["presets"]]
        for name in choices or []:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"{name!r} is not a preset{hint}; presets: {', '.join(known)} "
                                 "(or define it under presets: {NAME: [module, ...]})")
        return choices

    @model_validator(mode="after")
    def _one_form(self):
        check_form(self.value, (None, None), self.choices)
        return self

    def modules(self, name_or_modules: str | list[str]) -> list[str]:
        """The module names of a preset (KeyError if unknown); a list is its own modules."""
        if isinstance(name_or_modules, list):
            return name_or_modules
        return self.presets.get(name_or_modules) or TARGET_PRESETS[name_or_modules]

    def suggest(self, trial, name: str) -> str | list[str]:
        return self.value if self.value is not None else trial.suggest_categorical(name, self.choices)

    def contains(self, v: str | list[str]) -> bool:
        return self._choice_of(v) is not None

    def as_param(self, v: str | list[str]) -> str | list[str]:
        """The preset that adapts the same modules as ``v`` (a preset's name or a list of modules)."""
        return self._choice_of(v)

    def _choice_of(self, v: str | list[str]) -> str | list[str] | None:
        try:
            wanted = sorted(self.modules(v))
        except KeyError:
            return None
        options = [self.value] if self.value is not None else self.choices
        return next((c for c in options if sorted(self.modules(c)) == wanted), None)
