"""Model cards (``README.md`` in the Hugging Face style) for an exported adapter and a merged model.

The YAML front matter carries what the Hub reads (``base_model``, ``datasets`` where the data are hub
dataset ids, ``library_name``, ``tags``); the
text says how the model was made: the study, the trial, its parameters and its eval loss, so an
adapter found on disk months later can be traced to its configuration.

``base_model`` is a hub id wherever one is known: the study's ``model.name_or_path`` when it names a
hub model; for a local folder, the hub id of the Hugging Face cache snapshot it is
(``.../models--ORG--NAME/snapshots/REVISION``) or else the ``_name_or_path`` its ``config.json``
recorded when it was saved from a hub model. The local folder is named in the text; with no hub id
to be found, ``base_model`` is the local path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from sweep.schema.objectives import Objectives
from sweep.study import trial_attrs as attrs
from trainer.data_check import sources
from trainer.hf_cache import HUB_ID
from trainer.hub_data import DEFAULT_SPLIT
from trainer.spec import TrialSpec
from trainer.trial_folder import ADAPTER_SPEC_FILE

TAGS = ["lora", "peft", "sft", "trl", "transformers", "lora-sweep", "optuna"]


@dataclass(frozen=True)
class Standing:
    """Where a trial stands in its study: the best trial (or the Pareto front), how many trials completed,
    and what they were scored on."""

    best: list[int]
    n_complete: int
    objectives: Objectives = Objectives()

    def of(self, number: int) -> str:
        """``the best of 6 complete trials``, ``on the Pareto front (#2, #5) of 6 complete trials``, ..."""
        of = f" of {self.n_complete} complete trials"
        if self.objectives.multi:
            listed = ", ".join(f"#{n}" for n in self.best)
            return ("on" if number in self.best else "not on") + f" the Pareto front ({listed})" + of
        return ("the best" if number in self.best else f"one (the best is #{self.best[0]})") + of


def adapter_card(spec: TrialSpec, trial, study_name: str, standing: Standing) -> str:
    """The card of an exported LoRA adapter (loads with ``PeftModel.from_pretrained``)."""
    usage = (
        "```python\nfrom peft import PeftModel\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f"base = AutoModelForCausalLM.from_pretrained({json.dumps(base_model(spec.model.name_or_path))})\n"
        "model = PeftModel.from_pretrained(base, \"path/to/this/folder\")\n"
        "tokenizer = AutoTokenizer.from_pretrained(\"path/to/this/folder\")\n```\n"
    )
    return _card(spec, trial, study_name, standing, "peft", "LoRA adapter", usage)


def merged_card(spec: TrialSpec, trial, study_name: str, standing: Standing, dtype: str) -> str:
    """The card of the base model with the adapter merged in (loads with ``AutoModelForCausalLM``)."""
    usage = (
        "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        "model = AutoModelForCausalLM.from_pretrained(\"path/to/this/folder\")\n"
        "tokenizer = AutoTokenizer.from_pretrained(\"path/to/this/folder\")\n```\n"
        f"\nThe LoRA adapter is merged into the base weights (saved as {dtype}); no PEFT needed to load it.\n"
    )
    return _card(spec, trial, study_name, standing, "transformers", "merged model", usage,
                 extra_tags=["merged"])


def _card(spec: TrialSpec, trial, study_name: str, standing: Standing, library: str, kind: str,
          usage: str, extra_tags: list[str] | None = None) -> str:
    recorded = trial.user_attrs
    backend = recorded.get(attrs.BACKEND) or spec.backend
    tags = [*TAGS, *(extra_tags or []), *(["unsloth"] if backend == "unsloth" else [])]
    base = base_model(spec.model.name_or_path)
    hub_sets = list(dict.fromkeys(source.value for source in sources(spec.data) if source.hub))
    front = yaml.safe_dump({"base_model": base, **({"datasets": hub_sets} if hub_sets else {}),
                            "library_name": library, "pipeline_tag": "text-generation", "tags": tags},
                           sort_keys=False)
    objectives = standing.objectives
    scores = "".join(f"| {title} | {value:.4f} |\n" for title, value in
                     zip(objectives.titles, trial.values, strict=True))
    if "last_eval" not in objectives.names:
        scores += _row("eval loss after the last step", recorded.get(attrs.EVAL_LOSS))
    if recorded.get(attrs.KEEP_ADAPTER) == "best_eval":
        scores += _row("adapter from step", recorded.get(attrs.ADAPTER_STEP))
    train_set, *eval_source = (_data_text(spec, source) for source in sources(spec.data))
    eval_set = eval_source[0] if eval_source else \
        f"{spec.data.eval_fraction:g} of the training rows (split seed {spec.data.split_seed})"
    return (
        f"---\n{front}---\n\n"
        f"# {study_name}, trial {trial.number}: {kind} of {base}\n\n"
        f"Fine-tuned with LoRA by lora-sweep in the Optuna study `{study_name}`: "
        f"trial #{trial.number}, {standing.of(trial.number)}.{_local_note(spec.model.name_or_path, base)}\n\n"
        f"## Results\n\n| metric | value |\n| --- | --- |\n{scores}"
        + _row("train loss", recorded.get(attrs.TRAIN_LOSS)) + _row("training steps", recorded.get(attrs.STEPS))
        + _row("training seconds", recorded.get(attrs.TRAIN_SECONDS)) + _row("backend", backend)
        + f"\nEval set: {eval_set}.\n\n"
        "## How it was made\n\n| setting | value |\n| --- | --- |\n"
        + "".join(_row(name, value) for name, value in _settings(spec))
        + f"\nTraining data: {train_set} (row format: {spec.data.format}). The complete trial spec is in "
        f"`{ADAPTER_SPEC_FILE}` beside this card.\n\n"
        f"## Usage\n\n{usage}"
    )


def _data_text(spec: TrialSpec, source) -> str:
    """A data source as the card names it: the file, or the hub dataset with its subset and split."""
    if not source.hub:
        return f"`{source.value}`"
    subset = f", subset `{spec.data.subset}`" if spec.data.subset else ""
    return f"the Hugging Face dataset `{source.value}`{subset}, split `{source.split or DEFAULT_SPLIT}`"


def base_model(name_or_path: str) -> str:
    """The hub id of the base model where one is known (see the module docstring), else its local path."""
    folder = Path(name_or_path).expanduser()
    if not folder.is_dir():
        return name_or_path  # the study validated it: a hub id
    for part in (folder, *folder.parents):
        if part.parent.name == "snapshots" and part.parent.parent.name.startswith("models--"):
            return part.parent.parent.name.removeprefix("models--").replace("--", "/", 1)
    try:
        recorded = json.loads((folder / "config.json").read_text()).get("_name_or_path", "")
    except (OSError, ValueError):
        recorded = ""
    if isinstance(recorded, str) and HUB_ID.match(recorded) and not Path(recorded).expanduser().exists():
        return recorded
    return name_or_path


def _local_note(name_or_path: str, base: str) -> str:
    if not Path(name_or_path).expanduser().is_dir():
        return ""
    if base != name_or_path:
        return f" The base model was loaded from the local folder `{name_or_path}`."
    return (f" The base model is the local folder `{name_or_path}`; no hub id was found for it "
            "(set `base_model` above to one before pushing this card to the Hugging Face Hub).")


def _settings(spec: TrialSpec) -> list[tuple[str, object]]:
    t, lora = spec.training, spec.lora
    return [
        ("learning_rate", t.learning_rate), ("num_train_epochs", t.num_train_epochs), ("max_steps", t.max_steps),
        ("r", lora.r), ("lora_alpha", lora.lora_alpha), ("use_rslora", lora.use_rslora),
        ("lora_dropout", lora.lora_dropout), ("target_modules", ", ".join(lora.target_modules)),
        ("per_device_train_batch_size", t.per_device_train_batch_size),
        ("gradient_accumulation_steps", t.gradient_accumulation_steps), ("optim", t.optim),
        ("lr_scheduler_type", t.lr_scheduler_type), ("warmup", t.warmup_ratio or t.warmup_steps),
        ("weight_decay", t.weight_decay), ("max_seq_length", spec.model.max_seq_length),
        ("load_in_4bit", spec.model.load_in_4bit), ("seed", t.seed),
    ]


def _row(name: str, value) -> str:
    if value is None:
        return ""
    shown = f"{value:.4g}" if isinstance(value, float) else str(value)
    return f"| {name} | {shown} |\n"
