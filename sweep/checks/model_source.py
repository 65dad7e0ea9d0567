"""Where a study's base model comes from: a local model folder, or a hub id already in the Hugging Face cache.

Checked before a study starts, without importing ``huggingface_hub``: a trainer given a name that is
neither would ask the hub for it, and offline that costs about a minute of retries per trial before
it fails. ``model.name_or_path`` is read as:

* a path when it looks like one (``/abs``, ``./rel``, ``../rel``, ``~/x``, or ``a/b`` whose folder
  ``a`` exists beside the study file): it must be a folder holding ``config.json``;
* otherwise a hub id (``org/name``, or a bare ``name``): the Hugging Face cache must hold a snapshot
  of it with ``config.json`` (download it first, e.g. ``hf download org/name``).

The cache folder is the one ``huggingface_hub`` uses (:func:`trainer.hf_cache.hub_cache_dir`):
``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``, else
``~/.cache/huggingface/hub``.

Example::

    resolve_model("AI-Sweden-Models/Llama-3-8B-instruct", Path("studies"))  # the id, if cached
    resolve_model("models/tiny-llama", Path("studies"))                     # "/abs/studies/models/tiny-llama"
"""

from __future__ import annotations

import os
from pathlib import Path

from trainer.hf_cache import hub_cache_dir, hub_offline, looks_like_path


class ModelNotFound(ValueError):
    """``name_or_path`` is neither a model folder nor a cached hub model; the message says where it looked."""


def resolve_model(name_or_path: str, base: Path, environ=os.environ) -> str:
    """An absolute folder for a local model, the hub id itself for a cached one; else :class:`ModelNotFound`."""
    local = Path(name_or_path).expanduser()
    local = local if local.is_absolute() else base / local
    if looks_like_path(name_or_path, base):
        if local.is_dir() and (local / "config.json").is_file():
            return str(local)
        found = "has no config.json" if local.is_dir() else "is not a folder" if local.exists() else "does not exist"
        raise ModelNotFound(f"{local} {found}: give a model folder (with config.json) or a hub id like org/name")
    cached = hub_cache_dir(environ) / f"models--{name_or_path.replace('/', '--')}"
    if any((snapshot / "config.json").is_file() for snapshot in cached.glob("snapshots/*")):
        return name_or_path
    how = f"download it where there is a network (`hf download {name_or_path}`): HF_HUB_OFFLINE is set here" \
        if hub_offline(environ) else \
        f"download it first (`hf download {name_or_path}`; with HF_HUB_OFFLINE=1 trainers never wait on the hub)"
    raise ModelNotFound(f"neither a model folder ({local} does not exist) nor in the Hugging Face cache "
                        f"({cached} has no snapshot with config.json); give a local model folder, or {how}")

