"""``python -m sweep export --study NAME [--trial N] --to DIR [--merge]``: a trial's adapter, ready to share.

Copies the chosen trial's adapter (default: the best trial; a multi-objective study has none, so
``--trial`` picks one of its Pareto front) into DIR with its tokenizer, its
``trial_spec.json`` and a model card (``README.md``, Hugging Face style: base model, parameters,
study, trial, eval loss). DIR loads with ``PeftModel.from_pretrained(base, DIR)``. With ``--merge``
DIR also gets ``merged/``: the base model with the adapter merged in, loadable with
``AutoModelForCausalLM.from_pretrained`` (Unsloth's 16-bit merged save on a GPU with Unsloth, PEFT's
``merge_and_unload`` otherwise; see ``python -m trainer.merge --help``).

DIR must be new or empty; nothing is written unless the whole export succeeds.

Examples::

    python -m sweep export --study demo --to exports/demo-best
    python -m sweep export --study demo --trial 3 --to exports/demo-3 --merge
"""

from __future__ import annotations

from pathlib import Path

from sweep.errors import UserError
from sweep.study.locate import add_study_arguments, open_existing
from trainer.spec import DTYPES


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("export", help="copy a trial's adapter (and a merged model) with a model card",
                                   description=__doc__.splitlines()[0])
    add_study_arguments(parser)
    parser.add_argument("--trial", help="trial number to export (default: the best trial)")
    parser.add_argument("--to", type=Path, required=True, help="new or empty folder to write to")
    parser.add_argument("--merge", action="store_true", help="also write the merged model to DIR/merged")
    parser.add_argument("--merge-dtype", default="auto",
                        help="dtype of the merged weights: auto (the precision the trial trained in on this "
                             "machine), bfloat16, float16 or float32")
    parser.set_defaults(func=main)


def parse_trial(text: str | None) -> int | None:
    """``--trial`` as a trial number (0 or more), None when not given."""
    if text is None:
        return None
    if not text.isdigit():
        raise UserError(f"--trial: {text!r} is not allowed: give a trial number (0, 1, 2, ...)")
    return int(text)


def main(args) -> int:
    from sweep.results.export_adapter import check_destination, choose_trial, export_trial, standing, trial_adapter

    number = parse_trial(args.trial)
    if args.merge_dtype not in DTYPES:
        raise UserError(f"--merge-dtype: {args.merge_dtype!r} is not allowed: choose one of {', '.join(DTYPES)}")
    if args.merge_dtype != "auto" and not args.merge:
        raise UserError(f"--merge-dtype {args.merge_dtype}: only means something with --merge")
    check_destination(args.to)
    study, optuna_study = open_existing(args)
    trial = choose_trial(optuna_study, study.name, number)
    adapter = trial_adapter(trial)
    if args.merge:
        print(f"merging trial #{trial.number}'s adapter into its base model (in a trainer subprocess)...", flush=True)
    where = standing(optuna_study)
    to = export_trial(trial, adapter, args.to, study.name, where, args.merge_dtype if args.merge else None)
    scores = ", ".join(f"{title} {value:.4f}" for title, value in zip(where.objectives.titles, trial.values, strict=True))
    print(f"exported trial #{trial.number} of study {study.name} ({scores}) to {to}")
    if args.merge:
        print(f"  merged model: {to / 'merged'}")
    return 0
