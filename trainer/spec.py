"""The typed contract between the orchestrator (``sweep``) and the trainer.

The orchestrator writes a :class:`TrialSpec` as ``spec.json`` in the trial's folder and starts
``python -m trainer spec.json``; the trainer validates it first thing. The same section models
(``model``, ``data``, ``lora``, ``training``) are what a study file's sections hold, so a study file
and a trial spec read alike. This module imports pydantic only (and the plain-Python names of
:mod:`trainer.chat_templates`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trainer import chat_templates

Dtype = Literal["auto", "bfloat16", "float16", "float32"]
DTYPES = get_args(Dtype)  # also the choices of a merged model's dtype (trainer.merge, sweep export)
SEVEN_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# the grouped backend (trainer.group) trains each member with its own AdamW; 8-bit states save nothing on LoRA's scale
GROUPED_OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit")
# transformers' names of its experiment-tracker integrations (``report_to``); a test keeps them in step
TRACKERS = ("azure_ml", "clearml", "codecarbon", "comet_ml", "dagshub", "dvclive", "flyte", "kubeflow", "mlflow",
            "neptune", "swanlab", "tensorboard", "trackio", "wandb")


class Strict(BaseModel):
    """Base for every config section: unknown keys are errors, values are re-validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSpec(Strict):
    """The base model and how it is loaded."""

    name_or_path: str = Field(description="Local folder or Hugging Face hub id of the base model.")
    max_seq_length: int = Field(2048, ge=8, le=131072, description="Rows are truncated to this many tokens.")
    load_in_4bit: bool | None = Field(
        None, description="Quantise the base to 4 bits (QLoRA). Default: true on a GPU, false on CPU."
    )
    chat_template: str = Field(
        "model", description="'model': the tokenizer's own template; or a name of Unsloth's get_chat_template "
                             "(chatml, llama-3, llama-3.1, mistral, gemma, phi-3, qwen-2.5, ...): trainer.chat_templates."
    )
    dtype: Dtype = Field(
        "auto", description="Compute dtype. 'auto': bfloat16 where the GPU supports it, float32 on CPU."
    )

    @field_validator("chat_template")
    @classmethod
    def _known_template(cls, name: str) -> str:
        return chat_templates.check_name(name)


class DataSpec(Strict):
    """Training and evaluation data: local files, or Hugging Face dataset ids read from this host's cache."""

    train: str = Field(description="JSONL file, a `datasets` folder saved with save_to_disk, or a Hugging Face "
                                   "dataset id (org/name) already in the local cache (trainer.hub_data).")
    eval: str | None = Field(None, description="Separate eval set (file, folder or dataset id). Exclusive with eval_fraction.")
    eval_fraction: float | None = Field(
        None, gt=0.0, lt=1.0, description="Fraction of the train rows split off as eval set, with split_seed."
    )
    split_seed: int = Field(42, description="Seed of the train/eval split.")
    subset: str | None = Field(
        None, min_length=1, description="Subset (configuration) of the dataset id(s), as load_dataset's second argument (axolotl's name)."
    )
    train_split: str | None = Field(None, min_length=1, description="Split of the dataset id of train (default: train).")
    eval_split: str | None = Field(
        None, min_length=1, description="Split of the dataset id of eval, or of train's when eval is not given (e.g. test)."
    )
    format: Literal["auto", "chat", "sharegpt", "alpaca", "text"] = Field(
        "auto", description="Row format: chat `messages`, sharegpt `conversations`, alpaca `instruction`/`output`, or `text`."
    )
    train_on_responses_only: bool | None = Field(
        None, description="Loss on assistant tokens only. Default: true for chat and alpaca rows, false for text."
    )

    @model_validator(mode="after")
    def _one_eval_source(self) -> DataSpec:
        if self.eval_fraction is not None and (self.eval is not None or self.eval_split is not None):
            given = "eval" if self.eval is not None else "eval_split"
            raise ValueError(f"give either {given} or eval_fraction, not both")
        if self.eval is None and self.eval_fraction is None and self.eval_split is None:
            raise ValueError("an eval set is needed: give eval (a file or dataset id), eval_split (a split of "
                             "train's dataset, e.g. test) or eval_fraction (e.g. 0.1)")
        if self.format == "text" and self.train_on_responses_only:
            raise ValueError("train_on_responses_only needs chat or alpaca rows, not text")
        return self

    @property
    def eval_source(self) -> str | None:
        """Where the eval rows come from: ``eval``, or ``train``'s dataset when only ``eval_split`` is given."""
        return self.eval if self.eval is not None or self.eval_split is None else self.train


class LoraFixed(Strict):
    """LoRA settings that stay the same across trials."""

    target_modules: list[str] = Field(
        default_factory=lambda: list(SEVEN_PROJECTIONS), min_length=1, description="Module names to adapt."
    )
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA path (0 is fastest).")
    bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases are trained.")


class LoraSpec(LoraFixed):
    """LoRA settings of one trial, searched ones included."""

    r: int = Field(ge=1, le=1024, description="LoRA rank.")
    lora_alpha: float = Field(gt=0, description="LoRA scaling numerator: alpha/r, or alpha/sqrt(r) with rsLoRA.")
    use_rslora: bool = Field(False, description="Rank-stabilised LoRA: scale by alpha/sqrt(r).")


class TrainingFixed(Strict):
    """Training settings that stay the same across trials (TRL SFTConfig names)."""

    per_device_train_batch_size: int = Field(8, ge=1, description="Micro-batch size.")
    per_device_eval_batch_size: int = Field(8, ge=1, description="Batch size at evaluation.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0, description="Fraction of steps with linear warm-up.")
    warmup_steps: int = Field(5, ge=0, description="Warm-up steps (used when warmup_ratio is 0).")
    optim: Literal["adamw_8bit", "adamw_torch", "paged_adamw_8bit", "adamw_torch_fused", "sgd", "adafactor"] = Field(
        "adamw_8bit", description="Optimizer. 8-bit ones need bitsandbytes and a GPU; on CPU adamw_torch is used."
    )
    weight_decay: float = Field(0.01, ge=0.0, description="Weight decay.")
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "linear", description="Learning-rate schedule."
    )
    max_grad_norm: float = Field(1.0, gt=0.0, description="Gradient clipping.")
    eval_points: int = Field(
        10, ge=1, le=1000, description="Evaluate (and checkpoint) at this many evenly spread points of each trial."
    )
    eval_steps: int | None = Field(None, ge=1, description="Instead of eval_points: evaluate every N steps.")
    logging_steps: int = Field(1, ge=1, description="Report train loss every N steps.")
    max_steps: int | None = Field(None, ge=1, description="Stop after N steps (overrides epochs).")
    packing: bool = Field(False, description="Pack several rows into one sequence.")
    seed: int = Field(3407, description="Seed of the trainer and of LoRA's initialisation.")
    report_to: list[Literal[TRACKERS]] = Field(
        default_factory=list, description="Experiment trackers, as transformers names them (tensorboard, mlflow, "
                                          "wandb, ...): one run per trial, named STUDY/trial-N. 'none' or []: none."
    )

    @field_validator("report_to", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        # transformers takes a name or a list; "all" is not taken: a sweep's trackers are named, not whatever is installed
        if value is None or value == "none":
            return []
        if isinstance(value, str):
            return [value]
        return list(dict.fromkeys(value)) if isinstance(value, list) else value


class TrainingSpec(TrainingFixed):
    """Training settings of one trial, searched ones included."""

    learning_rate: float = Field(gt=0.0, le=1.0, description="Peak learning rate.")
    num_train_epochs: int = Field(ge=1, le=100, description="Passes over the training set.")


class SamplesSpec(Strict):
    """Sample generations made after training, stored with the trial."""

    count: int = Field(0, ge=0, le=64, description="How many eval prompts to answer (0: none).")
    max_new_tokens: int = Field(64, ge=1, le=4096, description="Tokens generated per answer.")
    temperature: float = Field(0.0, ge=0.0, description="0 means greedy decoding.")


class TrialSpec(Strict):
    """Everything one trial needs: written by the orchestrator, read by the trainer."""

    study: str = Field(description="Study name.")
    trial_number: int = Field(ge=0, description="Optuna trial number.")
    params: dict[str, float | int | bool | str] = Field(default_factory=dict, description="The sampled parameters.")
    model: ModelSpec
    data: DataSpec
    lora: LoraSpec
    training: TrainingSpec
    samples: SamplesSpec = Field(default_factory=SamplesSpec)
    output_dir: str = Field(description="The trial's folder: adapter/, checkpoints/, events.jsonl live here.")
    backend: Literal["auto", "unsloth", "transformers", "grouped"] = Field(
        "auto", description="'auto': Unsloth where installed and a GPU is present, else transformers + PEFT; "
        "'grouped': transformers with the shared-base trainer of trainer.group (here a group of one)."
    )
    resume: bool = Field(True, description="Continue from the newest checkpoint in output_dir if there is one.")
    cache_dir: str | None = Field(None, description="Per-study cache of tokenised datasets (none: no cache).")
    study_uid: str | None = Field(None, description="Id of the study (version): only its trials resume its checkpoints.")
    keep_checkpoints: bool = Field(False, description="Keep the checkpoints of a finished trial (default: drop them).")
    study_dir: str | None = Field(
        None, description="The study's folder (runs/NAME): trackers keep their local files under it (default: output_dir)."
    )
    evaluate_only: bool = Field(
        False, description="Measure the base model before any training: eval loss, samples and chrF; no adapter."
    )
    keep_adapter: Literal["last", "best_eval"] = Field(
        "last", description="Which weights adapter/ keeps: the last step's, or (best_eval) those of the eval point "
                            "with the lowest eval loss, saved whenever an eval point improves on the best so far."
    )

    @model_validator(mode="after")
    def _grouped_keeps_the_last(self) -> TrialSpec:
        if self.backend == "grouped" and self.keep_adapter != "last":
            raise ValueError("keep_adapter best_eval: the grouped backend keeps the last step's adapter only")
        return self

    @property
    def out(self) -> Path:
        return Path(self.output_dir)

    def write(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> TrialSpec:
        return cls.model_validate_json(Path(path).read_text())
