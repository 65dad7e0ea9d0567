"""Hugging Face caches holding a hub dataset, made here as a download would leave them (there is no network).

* :func:`prepare_in_datasets_cache`: what ``datasets.load_dataset('org/name')`` leaves in the datasets
  cache: its JSON builder's Arrow files and ``dataset_info.json`` under ``ORG___NAME/SUBSET/0.0.0/REVISION``.
  The same builder writes them, given the repository's files from a local folder instead of the hub
  (the hub's loader names the builder's cache folder after the repository: ``ORG___NAME``).
* :func:`snapshot_in_hub_cache`: what ``hf download --repo-type dataset org/name`` leaves in the hub
  cache: ``datasets--ORG--NAME/snapshots/REVISION/`` with the repository's files, ``refs/main`` naming it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def _write_repo(folder: Path, splits: dict[str, list[dict]]) -> dict[str, str]:
    (folder / "data").mkdir(parents=True, exist_ok=True)
    files = {}
    for split, rows in splits.items():
        path = folder / "data" / f"{split}-00000-of-00001.jsonl"
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
        files[split] = str(path)
    return files


def prepare_in_datasets_cache(hf_home: Path, dataset_id: str, splits: dict[str, list[dict]],
                              subset: str = "default", revision: str = "0123abcd") -> Path:
    """The dataset prepared in ``hf_home/datasets`` as ``load_dataset(dataset_id, subset)`` prepares it; its folder."""
    from datasets.packaged_modules.json.json import Json

    org, name = dataset_id.split("/")
    work = hf_home / "work" / revision / subset
    files = _write_repo(work / "repo", splits)
    builder = Json(cache_dir=str(work / "staging"), dataset_name=name, config_name=subset, config_id=subset,
                   data_files=files, hash=revision)
    builder.download_and_prepare()
    prepared = Path(builder.cache_dir)  # work/staging/NAME/SUBSET/0.0.0/REVISION
    target = hf_home / "datasets" / f"{org}___{prepared.parents[2].name}" / subset / "0.0.0" / revision
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(prepared), str(target))
    shutil.rmtree(work)
    return target


def snapshot_in_hub_cache(hf_home: Path, dataset_id: str, splits: dict[str, list[dict]],
                          revision: str = "4567cdef") -> Path:
    """The dataset repository in ``hf_home/hub`` as ``hf download --repo-type dataset`` leaves it; its snapshot."""
    repo = hf_home / "hub" / f"datasets--{dataset_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    _write_repo(snapshot, splits)
    (snapshot / "README.md").write_text(f"# {dataset_id}\n", encoding="utf-8")
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot
