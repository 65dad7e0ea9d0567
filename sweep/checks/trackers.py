"""Before a run: the experiment trackers of ``training.report_to`` are installed where the trainers run.

Without the check each trial would fail in its trainer (transformers refuses a tracker it cannot
import) and the run would stop after ``execution.max_consecutive_failures`` of them. Looks for the
packages without importing them (``--help`` and ``status`` stay instant; MLflow alone takes seconds).

    >>> check_trackers(study)  # doctest: +SKIP
    UserError: studies/x.yaml: training.report_to: 'mlflow' needs the Python package mlflow, which is not
    installed here; pip install 'lora-sweep[tracking]' adds it
"""

from __future__ import annotations

import importlib.util
import os

from sweep.errors import UserError
from sweep.schema.study_file import Study

# what transformers looks for (transformers.integrations.integration_utils.is_*_available): any one will do
PACKAGES = {
    "azure_ml": ("azureml.core",), "clearml": ("clearml",), "codecarbon": ("codecarbon",),
    "comet_ml": ("comet_ml",), "dagshub": ("dagshub",), "dvclive": ("dvclive",), "flyte": ("flytekit",),
    "mlflow": ("mlflow",), "neptune": ("neptune",), "swanlab": ("swanlab",),
    "tensorboard": ("tensorboard", "tensorboardX"), "trackio": ("trackio",), "wandb": ("wandb",),
}
TRACKING_EXTRA = ("tensorboard", "mlflow", "wandb")  # pyproject's `tracking` extra
KUBEFLOW_URL = "KUBEFLOW_TRAINER_SERVER_URL"  # kubeflow is a service, not a package: transformers needs its URL


def check_trackers(study: Study) -> None:
    """Raise a UserError, one line per tracker, for each tracker of ``training.report_to`` that cannot run here."""
    problems = []
    for name in study.config.training.report_to:
        if name == "kubeflow":
            if not os.environ.get(KUBEFLOW_URL):
                problems.append(f"{study.path}: training.report_to: 'kubeflow' needs {KUBEFLOW_URL} in the environment")
        elif not any(_installed(module) for module in PACKAGES[name]):
            hint = "; pip install 'lora-sweep[tracking]' adds it" if name in TRACKING_EXTRA else ""
            problems.append(f"{study.path}: training.report_to: {name!r} needs the Python package "
                            f"{' or '.join(PACKAGES[name])}, which is not installed here{hint}")
    if problems:
        raise UserError("\n".join(problems))


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a dotted name whose parent package is missing
        return False
