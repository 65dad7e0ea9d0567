"""Study files (``studies/NAME.yaml``): the schema, and loading one with every problem reported at once.

A study file holds the sections of a trial spec that stay fixed (``model``, ``data``, ``lora``,
``training``, ``samples``) plus ``search`` (the space and how to explore it) and ``execution``
(limits per trial). Unknown keys are errors. Relative paths are resolved against the study file's
own folder, so a study runs the same from any working directory; a model or data value that is no
path there and reads like a hub id (``org/name``) is kept as the id.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator, model_validator

from sweep.checks.model_source import ModelNotFound, resolve_model
from sweep.errors import UserError
from sweep.schema.objectives import DEFAULT, Metric, Objectives, objective_problem
from sweep.schema.pruners import PrunerConfig
from sweep.schema.samplers import SAMPLERS, SINGLE_OBJECTIVE_SAMPLERS, SamplerConfig, grid_of
from sweep.schema.search_space import CORE, SearchSpace
from sweep.schema.study_space import StudySpace
from trainer.hf_cache import looks_like_path
from trainer.hub_data import looks_like_dataset_id
from trainer.spec import GROUPED_OPTIMIZERS, DataSpec, LoraFixed, ModelSpec, SamplesSpec, Strict, TrainingFixed
from trainer.worker import MAX_LEAK_MB, MAX_TRIALS

STUDIES_DIR = Path(__file__).resolve().parents[2] / "studies"
# a study's folder is RUNS_DIR/NAME: one path component, and never "." or ".." (the runs folder or its parent)
STUDY_NAME = re.compile(r"^(?!\.{1,2}$)[\w.-]+$")
STUDY_NAME_RULE = "a study name is letters, digits, '_', '.' and '-', and not '.' or '..'"


class WarmStart(Strict):
    """An earlier study whose finished trials inform this one's sampler from the start."""

    study: str = Field(pattern=r"^[\w.@-]+$", description="Name of the earlier study (its newest version is read).")
    storage: str | None = Field(
        None, description="Its storage URL. Default: this run's --storage, else RUNS_DIR/STUDY/study.db."
    )


class SearchConfig(Strict):
    """What to search and how."""

    n_trials: int = Field(ge=1, description="Finished trials (complete or pruned) the study aims for, in total.")
    timeout_hours: float | None = Field(
        None, gt=0, description="No new trial starts once the study has run this long, summed over its runs; "
                                "running trials finish."
    )
    objective: list[Metric] = Field(
        default_factory=lambda: [DEFAULT], description="What a trial scores: last_eval (default), best_eval, chrf, "
        "or a list of them with gpu_seconds (multi-objective: a Pareto front); see sweep.schema.objectives."
    )
    params: SearchSpace = Field(default_factory=SearchSpace, description="The hyperparameters: fixed or searched.")
    sampler: SamplerConfig = Field(default_factory=SamplerConfig, description="Optuna sampler.")
    pruner: PrunerConfig = Field(default_factory=PrunerConfig, description="Optuna pruner.")
    enqueue: list[dict[str, float | int | bool | str]] = Field(
        default_factory=list, description="Configurations to try first, e.g. the current defaults."
    )
    warm_start: WarmStart | None = Field(
        None, description="Copy an earlier study's finished trials that lie in this space first (not counted in n_trials)."
    )

    @field_validator("objective", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return [value] if isinstance(value, str) else value

    @field_validator("objective")
    @classmethod
    def _a_sound_objective(cls, names: list[str]) -> list[str]:
        problem = objective_problem(names)
        if problem:
            raise ValueError(problem)
        return names

    @model_validator(mode="before")
    @classmethod
    def _no_pruning_by_default_where_none_can_act(cls, data):
        if isinstance(data, dict) and "pruner" not in data:
            objective = data.get("objective", [DEFAULT])
            names = (objective,) if isinstance(objective, str) else tuple(objective) if isinstance(objective, list) else ()
            if names and not Objectives(names).prunable:  # anything else is the objective's own error
                data = {**data, "pruner": {"name": "none"}}
        return data

    @model_validator(mode="after")
    def _objective_fits(self):
        objectives = Objectives(tuple(self.objective))
        if self.pruner.name != "none" and not objectives.prunable:
            why = ("Optuna cannot prune a multi-objective study" if objectives.multi else
                   f"pruners judge the eval-loss curve, not {objectives.labels[0]}")
            raise ValueError(f"pruner {self.pruner.name} with objective {self.objective}: {why}; "
                             "give pruner: {name: none} or leave pruner out")
        if objectives.multi and self.sampler.name in SINGLE_OBJECTIVE_SAMPLERS:
            raise ValueError(f"sampler {self.sampler.name} with objective {self.objective}: Optuna's "
                             f"{self.sampler.name} sampler is single-objective; use one of "
                             f"{', '.join(n for n in SAMPLERS if n not in SINGLE_OBJECTIVE_SAMPLERS)}")
        return self

    @model_validator(mode="after")
    def _enqueued_inside_space(self):
        for i, entry in enumerate(self.enqueue):
            unknown = set(entry) - set(SearchSpace.model_fields)
            if unknown:
                raise ValueError(f"enqueue[{i}] has unknown parameter(s) {sorted(unknown)}; "
                                 f"allowed: {sorted(SearchSpace.model_fields)}")
            try:
                self.params.to_optuna_params(entry)
            except ValueError as e:
                raise ValueError(f"enqueue[{i}]: {e}") from None
        return self


    @model_validator(mode="after")
    def _grid_has_a_grid(self):
        if self.sampler.name != "grid":
            return self
        try:
            grid_of(self.params)
        except ValueError as e:
            raise ValueError(f"sampler grid: {e}") from None
        rslora = self.params.use_rslora
        if rslora.searched and rslora.only_for_r is not None:
            raise ValueError("sampler grid: use_rslora with only_for_r would train every other rank twice (once per "
                             "rslora choice); drop only_for_r or fix use_rslora")
        return self


    @field_validator("params")
    @classmethod
    def _something_to_search(cls, params: SearchSpace, info: ValidationInfo) -> SearchSpace:
        n_trials = info.data.get("n_trials", 1)
        if n_trials > 1 and not params.searched_names():
            fixed = ", ".join(f"{name}={getattr(params, name).value}" for name in CORE)
            raise ValueError(f"nothing to search: every parameter is fixed ({fixed}), so all {n_trials} trials would "
                             "train the same configuration; give one a range ({low, high}) or choices, or set "
                             "n_trials: 1 to train this one configuration")
        return params

    @model_validator(mode="after")
    def _gp_without_pruning(self):
        if self.sampler.name == "gp" and self.pruner.name != "none":
            raise ValueError(f"sampler gp with pruner {self.pruner.name}: the GP sampler learns only from completed "
                             "trials and keeps proposing the configurations that were pruned; give pruner: {name: none}")
        return self


class ExecutionConfig(Strict):
    """How trials are run."""

    backend: Literal["auto", "unsloth", "transformers", "grouped"] = Field(
        "auto", description="Trainer backend. 'grouped': the trials on one device train together in one process "
        "on one shared base (trainer.group; see docs/parallel.md)."
    )
    group_matmul: Literal["loop", "bmm", "stacked"] = Field(
        "loop", description="grouped: how each trial's adapter meets its rows ('loop': bit-identical to a lone "
        "trial; 'bmm': batched; 'stacked': every trial's adapters, loss and AdamW in a few kernels a step, "
        "whatever the number of trials; no lora_dropout)."
    )
    group_cuda_graphs: bool = Field(
        False, description="grouped, group_matmul stacked, on a GPU: replay each step's kernels as a CUDA graph "
        "(captured once per step shape; trainer.group.step_graphs). Off by default: it lost in a whole sweep of the "
        "SmolLM2 study on an H200 (docs/parallel.md). No effect on a CPU."
    )
    timeout_minutes: float | None = Field(None, gt=0, description="A trial running longer is stopped as 'timeout' "
                                                                "(in a group worker: counted from when it joins).")
    max_retries: int = Field(2, ge=0, description="Times a trial interrupted or lost to a dead worker is retried.")
    max_consecutive_failures: int = Field(3, ge=1, description="Stop the run after this many failed trials in a row.")
    heartbeat_seconds: int = Field(10, ge=1, description="A running trial's worker records a heartbeat this often.")
    warm_workers: bool = Field(
        True, description="Run trials in warm trainer workers that import the training stack once (see docs)."
    )
    worker_max_trials: int = Field(MAX_TRIALS, ge=1, description="A warm worker is replaced after this many trials.")
    worker_max_leak_mb: float = Field(
        MAX_LEAK_MB, ge=0, description="A warm worker is replaced when more GPU memory than this stays allocated."
    )
    keep_checkpoints: bool = Field(
        False, description="Keep a finished trial's checkpoints (by default only its adapter stays)."
    )
    stale_after_seconds: int = Field(
        30, ge=1, description="A running trial without a heartbeat for this long is failed as stale and retried."
    )

    @model_validator(mode="after")
    def _grace_longer_than_heartbeat(self):
        if self.stale_after_seconds <= self.heartbeat_seconds:
            raise ValueError(f"stale_after_seconds ({self.stale_after_seconds}) must be longer than "
                             f"heartbeat_seconds ({self.heartbeat_seconds})")
        return self


class StudyFile(Strict):
    """One study: everything ``python -m sweep run`` needs."""

    name: str | None = Field(None, description="Study name (runs go to RUNS_DIR/NAME); default: the file's stem.")
    description: str = Field("", description="Free text, shown in the dashboard.")
    model: ModelSpec
    data: DataSpec
    lora: LoraFixed = Field(default_factory=LoraFixed)
    training: TrainingFixed = Field(default_factory=TrainingFixed)
    samples: SamplesSpec = Field(default_factory=SamplesSpec)
    search: SearchConfig
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)

    @field_validator("name")
    @classmethod
    def _one_folder_name(cls, name: str | None) -> str | None:
        if name is not None and not STUDY_NAME.match(name):
            raise ValueError(STUDY_NAME_RULE)
        return name

    @model_validator(mode="after")
    def _grouped_can_train(self):
        if self.execution.backend != "grouped":
            return self
        if self.training.optim not in GROUPED_OPTIMIZERS:
            raise ValueError(f"training.optim {self.training.optim!r}: the grouped backend trains with AdamW, "
                             f"one of {', '.join(GROUPED_OPTIMIZERS)}")
        if self.training.packing:
            raise ValueError("training.packing true: the grouped backend stacks rows unpacked; set it to false")
        if self.lora.bias != "none":
            raise ValueError(f"lora.bias {self.lora.bias!r}: the grouped backend shares the base's biases; use 'none'")
        if "best_eval" in self.search.objective:
            raise ValueError("search.objective best_eval keeps each trial's best adapter, which the grouped backend "
                             "does not yet; score last_eval (or chrf) or use another backend")
        dropout = self.lora.lora_dropout > 0 or self.search.params.lora_dropout is not None
        if self.execution.group_cuda_graphs and self.execution.group_matmul != "stacked":
            raise ValueError(f"execution.group_cuda_graphs true: CUDA graphs capture the stacked step only, but "
                             f"group_matmul is {self.execution.group_matmul!r}; set group_matmul: stacked")
        if self.execution.group_matmul == "stacked" and dropout:
            raise ValueError("execution.group_matmul stacked trains without LoRA dropout, but lora_dropout is set or "
                             "searched: drop it, or use group_matmul loop or bmm")
        return self

    @model_validator(mode="after")
    def _searched_or_fixed(self):
        problem = self.space.problem()
        if problem:
            raise ValueError(problem)
        return self

    @property
    def space(self) -> StudySpace:
        """The search space with the fixed sections it completes."""
        return StudySpace(self.search.params, self.lora, self.training)

    @model_validator(mode="after")
    def _chrf_has_answers(self):
        if "chrf" in self.search.objective and self.samples.count == 0:
            raise ValueError("search.objective chrf scores the trials' sample answers, but samples.count is 0; "
                             "set samples: {count: 8} (or more) so each trial answers that many eval prompts")
        return self

    @model_validator(mode="after")
    def _pruner_can_act(self):
        if self.training.eval_steps is None:  # with eval_steps the number of reports depends on the trial
            problem = self.search.pruner.eval_points_problem(self.training.eval_points)
            if problem:
                raise ValueError(problem)
        return self


class Study(BaseModel):
    """A loaded study file: its validated content, where it came from, and its resolved name."""

    path: Path
    name: str
    config: StudyFile


def resolve_study_path(name_or_path: str) -> Path:
    """``NAME`` is ``studies/NAME.yaml`` (in the working directory, then beside this package); else a path."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        return candidate
    for folder in (Path.cwd() / "studies", STUDIES_DIR):
        for suffix in (".yaml", ".yml"):
            if (folder / f"{name_or_path}{suffix}").is_file():
                return folder / f"{name_or_path}{suffix}"
    known = sorted({p.stem for folder in (Path.cwd() / "studies", STUDIES_DIR) for p in folder.glob("*.y*ml")})
    raise UserError(f"{name_or_path}: no study of that name in studies/ (known: {', '.join(known) or 'none'})")


def load_study(name_or_path: str, resolve_paths: bool = True) -> Study:
    """Read, validate and resolve a study file; every problem is one line of the raised UserError.

    With ``resolve_paths`` (the default) the model and data paths must exist; without it only the
    schema is checked (for a study meant for another machine).
    """
    path = resolve_study_path(name_or_path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a study file; give a YAML file (studies/NAME.yaml)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: study file not found") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                        "a study file is YAML saved as UTF-8") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise UserError(f"{path}{where}: not valid YAML: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a study file is a mapping of sections (model, data, search, ...), got {type(raw).__name__}")
    try:
        config = StudyFile.model_validate(raw)
    except ValidationError as e:
        raise UserError("\n".join(_error_lines(path, e, raw))) from None
    name = config.name or path.stem
    if not STUDY_NAME.match(name):
        raise UserError(f"{path}: name: {name!r} (the file's name) is not allowed: {STUDY_NAME_RULE}; "
                        "rename the file or set name: in it")
    if resolve_paths:
        _resolve_paths(path, config)
    return Study(path=path.resolve(), name=name, config=config)


def _error_lines(path: Path, error: ValidationError, raw: dict) -> list[str]:
    lines = []
    for item in error.errors():
        loc = [str(p) for p in item["loc"] if not str(p).startswith("function-")]
        key = ".".join(loc) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"{path}: {key}: unknown key{_did_you_mean(item['loc'], raw)}")
            continue
        if item["type"] == "missing":
            lines.append(f"{path}: {key}: required key is missing")
            continue
        message = item["msg"].removeprefix("Value error, ")
        if not loc:  # a rule across sections names its keys itself
            lines.append(f"{path}: {message}")
            continue
        value = item.get("input")
        shown = "" if isinstance(value, dict) else f" {value!r} is not allowed:"
        lines.append(f"{path}: {key}:{shown} {message}")
    return lines


def _did_you_mean(loc: tuple, raw: dict) -> str:
    model: type[BaseModel] | None = StudyFile
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if model else None
        annotation = _unless_none(getattr(field, "annotation", None))
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    if model is None:
        return ""
    allowed = list(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint}; allowed: {', '.join(allowed)}"


def _unless_none(annotation):
    """``X`` of an optional ``X | None``; anything else as it is."""
    if get_origin(annotation) in (Union, type(int | None)):
        rest = [a for a in get_args(annotation) if a is not type(None)]
        return rest[0] if len(rest) == 1 else annotation
    return annotation


def _resolve_paths(path: Path, config: StudyFile) -> None:
    base = path.resolve().parent
    model = config.model.name_or_path
    try:
        config.model.name_or_path = resolve_model(model, base)
    except ModelNotFound as e:
        raise UserError(f"{path}: model.name_or_path: {model!r} is not allowed: {e}") from None
    for key in ("train", "eval"):
        value = getattr(config.data, key)
        if value is None:
            continue
        full = Path(value).expanduser()
        full = full if full.is_absolute() else base / full
        if not full.exists() and looks_like_dataset_id(value) and not looks_like_path(value, base):
            continue  # a Hugging Face dataset id: the pre-flight check looks for it in this host's caches
        if not full.exists():
            raise UserError(f"{path}: data.{key}: {value!r} does not exist (looked for {full})")
        setattr(config.data, key, str(full))
