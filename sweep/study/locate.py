"""Opening the Optuna study behind a study file, as every subcommand does it."""

from __future__ import annotations

from pathlib import Path

from sweep.schema.study_file import Study, load_study
from sweep.study.storage import default_storage_url, open_study, storage_label


def storage_url(args, study: Study) -> str:
    return args.storage or default_storage_url(args.runs_dir, study.name)


def storage_name(args, study: Study) -> str:
    """How errors name the study's storage: ``--storage URL`` if given, else its database file."""
    return storage_label(storage_url(args, study), given=bool(args.storage))


def open_existing(args):
    """(study file, optuna study) for read-only commands; a study never run is a UserError.

    The study file's model and data are not looked for: reading a study needs neither (its
    database may have been copied to a machine without them). An edited search space made newer
    versions of the study (sweep.study.study_versions): the newest is the one returned.
    """
    from sweep.study.study_versions import newest_version  # optuna: only once a command runs

    study = load_study(args.study, resolve_paths=False)
    url, label = storage_url(args, study), storage_name(args, study)
    optuna_study = open_study(url, study.name, create=False, label=label)
    return study, newest_version(optuna_study, lambda name: open_study(url, name, create=False, label=label))


def add_study_arguments(parser) -> None:
    parser.add_argument("--study", required=True, help="study name (studies/NAME.yaml) or path to a study file")
    parser.add_argument("--storage", help="Optuna storage URL (default: sqlite:///RUNS_DIR/NAME/study.db)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"),
                        help="folder holding each study's database and trial folders (default: ./runs)")
