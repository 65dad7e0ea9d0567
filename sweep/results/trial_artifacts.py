"""Each trial's files in Optuna's artifact store, so ``python -m sweep dashboard`` shows them with the trial.

At the end of every trial (complete, pruned or failed) the objective attaches the trial's resolved
``spec.json``, its ``trainer.log`` and, when the trainer generated any, ``samples.jsonl`` (one
``{prompt, reference, answer}`` per line; the dashboard shows ``.jsonl`` artifacts as a table). The
store is a folder beside the trials, ``runs/NAME/artifacts/``, holding copies under Optuna's ids.
"""

from __future__ import annotations

import json
from pathlib import Path

from trainer.trial_folder import LOG_FILE, SAMPLES_FILE, SPEC_FILE

ARTIFACTS_DIR = "artifacts"
# the trial folder's files worth reading in the dashboard, with the media type it is served as
TRIAL_FILES = {SPEC_FILE: "application/json", LOG_FILE: "text/plain", SAMPLES_FILE: "application/jsonl"}


def artifact_store(study_folder: Path):
    """The study's :class:`optuna.artifacts.FileSystemArtifactStore` (its folder is created if missing)."""
    from optuna.artifacts import FileSystemArtifactStore

    folder = Path(study_folder) / ARTIFACTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(folder)


def write_samples(trial_dir: Path, samples: list[dict[str, str]]) -> Path | None:
    """Write the trial's sample generations as ``samples.jsonl``; None (and no file) when there are none."""
    path = Path(trial_dir) / SAMPLES_FILE
    if not samples:
        path.unlink(missing_ok=True)  # a retry reuses its trial folder: drop the earlier attempt's answers
        return None
    path.write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples), encoding="utf-8")
    return path


def attach_trial_files(trial, trial_dir: Path, samples: list[dict[str, str]], store) -> list[str]:
    """Upload the trial's spec, log and samples to ``store``; returns the names of the files attached."""
    from optuna.artifacts import upload_artifact

    write_samples(trial_dir, samples)
    attached = []
    for name, mimetype in TRIAL_FILES.items():
        path = Path(trial_dir) / name
        if path.is_file():
            upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial, mimetype=mimetype)
            attached.append(name)
    return attached
