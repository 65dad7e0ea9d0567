"""Where Hugging Face keeps what it downloaded, found as ``huggingface_hub`` and ``datasets`` find it.

Plain Python, so the orchestrator checks a hub model or dataset without importing either library:

* the hub cache (``hf download``, models and dataset repositories): ``HF_HUB_CACHE``, else
  ``HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``;
* the datasets cache (what ``datasets.load_dataset`` prepared, the Arrow files it reads offline):
  ``HF_DATASETS_CACHE``, else ``HF_HOME/datasets``, else ``$XDG_CACHE_HOME/huggingface/datasets``,
  else ``~/.cache/huggingface/datasets``.

A hub id is ``org/name`` or a bare ``name`` (:data:`HUB_ID`); a value that starts like a path
(:data:`PATH_PREFIXES`) is never one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")  # org/name, or a bare name like gpt2
PATH_PREFIXES = ("/", "./", "../", "~")


def _hf_home(environ) -> Path:
    if environ.get("HF_HOME"):
        return Path(environ["HF_HOME"]).expanduser()
    cache = Path(environ["XDG_CACHE_HOME"]).expanduser() if environ.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return cache / "huggingface"


def hub_cache_dir(environ=os.environ) -> Path:
    """The Hugging Face hub cache folder, chosen as ``huggingface_hub`` chooses it."""
    if environ.get("HF_HUB_CACHE"):
        return Path(environ["HF_HUB_CACHE"]).expanduser()
    return _hf_home(environ) / "hub"


def datasets_cache_dir(environ=os.environ) -> Path:
    """The ``datasets`` cache folder, chosen as ``datasets.config.HF_DATASETS_CACHE`` chooses it."""
    if environ.get("HF_DATASETS_CACHE"):
        return Path(environ["HF_DATASETS_CACHE"]).expanduser()
    return _hf_home(environ) / "datasets"


def hub_offline(environ=os.environ) -> bool:
    """Whether ``HF_HUB_OFFLINE`` says not to ask the hub."""
    return environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def looks_like_path(value: str, base: Path) -> bool:
    """Whether a study file's ``value`` (relative to the folder ``base``) names a local path, not a hub id.

    A path starts like one, is not shaped like an id, exists, or is ``a/b`` whose folder ``a`` exists
    beside the study file (``models/tiny-lama`` mistyped beside ``models/`` is a path that is missing).
    """
    local = Path(value).expanduser()
    local = local if local.is_absolute() else base / local
    if value.startswith(PATH_PREFIXES) or value in (".", "..") or not HUB_ID.match(value) or local.exists():
        return True
    return local.parent != base and local.parent.is_dir()
