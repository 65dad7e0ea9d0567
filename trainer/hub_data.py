"""Hugging Face dataset ids as ``data.train`` and ``data.eval``, read from this host's caches, never the network.

A data value that is no local file or folder and reads like a hub id (``org/name``, not ending in a
data file's suffix such as ``.jsonl``) names a dataset on the Hugging Face hub. Trials read it
offline, from what a download left on this host, looked for in this order:

* the datasets cache (:func:`trainer.hf_cache.datasets_cache_dir`, ``ORG___NAME/SUBSET/VERSION/HASH``):
  the Arrow files that ``datasets.load_dataset('org/name')`` prepared where there was a network,
  read as ``load_dataset`` reads them with ``HF_HUB_OFFLINE=1``;
* the hub cache (:func:`trainer.hf_cache.hub_cache_dir`, ``datasets--ORG--NAME/snapshots/REVISION``):
  the repository's files as ``hf download --repo-type dataset org/name`` fetched them, loaded as a
  local dataset folder (with the subsets and splits its README declares, as on the hub).

``data.subset`` picks one of the dataset's subsets (configurations: axolotl's ``name``, the second
argument of ``load_dataset``), ``data.train_split`` and ``data.eval_split`` its splits (default
``train``). Finding the cached copy is plain Python (:func:`find_cached`: the orchestrator's
pre-flight check and the cache key of its tokenizer check); reading it needs ``datasets``
(:func:`load_split`, in trainers and the tokenizer check's subprocess)::

    cached = find_cached("HuggingFaceH4/ultrachat_200k", None, "data.train")   # or a RowError saying how to fetch it
    rows = load_split(cached, None, "train_sft", "data.train_split").to_list()
"""

from __future__ import annotations

import difflib
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from trainer.hf_cache import HUB_ID, PATH_PREFIXES, datasets_cache_dir, hub_cache_dir
from trainer.rows import RowError

DEFAULT_SPLIT = "train"  # as axolotl's `split:` defaults
DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".tsv", ".arrow", ".txt")  # a file's name, not an id


def looks_like_dataset_id(value: str) -> bool:
    """Whether ``value`` has a hub dataset id's shape (it may still name a local file or folder)."""
    return (not value.startswith(PATH_PREFIXES) and HUB_ID.match(value) is not None
            and not value.lower().endswith(DATA_SUFFIXES))


def is_hub_id(value: str) -> bool:
    """Whether ``value`` names a hub dataset: an id's shape, and no file or folder of that name."""
    return looks_like_dataset_id(value) and not Path(value).expanduser().exists()


@dataclass(frozen=True)
class CachedDataset:
    """Where this host keeps a hub dataset: prepared by ``datasets`` (read by its id) or a hub snapshot folder."""

    dataset_id: str
    folder: Path
    prepared: bool

    def files(self) -> list[Path]:
        """The files whose change means other rows (the locks ``datasets`` leaves beside them left out)."""
        return sorted(p for p in self.folder.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


def prepared_folder(dataset_id: str, environ=os.environ) -> Path:
    """The datasets cache folder of ``dataset_id``, named as ``datasets`` names it (``org___snake_name``)."""
    *org, name = dataset_id.split("/")
    return datasets_cache_dir(environ) / "___".join([*org, _snake(name)])


def hub_snapshot(dataset_id: str, environ=os.environ) -> Path | None:
    """The hub cache's snapshot of the dataset repository: the one ``refs/main`` names, else the newest."""
    repo = hub_cache_dir(environ) / f"datasets--{dataset_id.replace('/', '--')}"
    main = repo / "refs" / "main"
    if main.is_file():
        snapshot = repo / "snapshots" / main.read_text().strip()
        if snapshot.is_dir() and any(snapshot.iterdir()):
            return snapshot
    found = [s for s in repo.glob("snapshots/*") if s.is_dir() and any(s.iterdir())]
    return max(found, key=lambda s: s.stat().st_mtime) if found else None


def find_cached(dataset_id: str, subset: str | None, key: str, environ=os.environ) -> CachedDataset:
    """The cached copy of ``dataset_id`` (with ``subset``); else a :class:`RowError` for ``key`` (or
    ``data.subset``) that says where it looked and the command that fetches it."""
    prepared = prepared_folder(dataset_id, environ)
    subsets = sorted({info.parents[2].name for info in prepared.glob("*/*/*/dataset_info.json")})
    if subsets and (subset in subsets if subset is not None else len(subsets) == 1):
        return CachedDataset(dataset_id, prepared, prepared=True)
    snapshot = hub_snapshot(dataset_id, environ)
    if snapshot is not None:
        return CachedDataset(dataset_id, snapshot, prepared=False)
    fetch = _fetch_command(dataset_id, subset)
    if subset is None and subsets:
        raise RowError(f"{dataset_id} has several subsets in the datasets cache ({', '.join(subsets)}): choose one "
                       f"with data.subset", key="data.subset")
    if subset is not None and subsets:
        raise RowError(f"{subset!r} is not among the subsets of {dataset_id} in the datasets cache "
                       f"({', '.join(subsets)}){_did_you_mean(subset, subsets)}; or fetch it once where there is a "
                       f"network: {fetch}", key="data.subset")
    raise RowError(f"{dataset_id} is neither a local file or folder nor a dataset in the Hugging Face caches "
                   f"({prepared} holds no dataset prepared by datasets, and "
                   f"{hub_cache_dir(environ) / ('datasets--' + dataset_id.replace('/', '--'))} no snapshot); fetch "
                   f"it once where there is a network: {fetch} (or hf download --repo-type dataset {dataset_id}), "
                   "then trials read it offline", key=key)


def load_split(cached: CachedDataset, subset: str | None, split: str, split_key: str):
    """One split of a cached hub dataset, a ``datasets.Dataset``, read without asking the hub.

    Raises :class:`RowError`: for ``data.subset`` when the subset is unknown, for ``split_key``
    (``data.train_split`` or ``data.eval_split``) when the dataset has no such split.
    """
    import datasets

    source = cached.dataset_id if cached.prepared else str(cached.folder)
    with _offline(datasets):
        try:  # the cache folder that find_cached looked in (datasets fixed its own at import)
            splits = datasets.load_dataset(source, subset, cache_dir=str(datasets_cache_dir()))
        except ValueError as e:  # "BuilderConfig 'x' not found. Available: [...]", "Config name is missing ..."
            text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if "config" not in text.lower():
                raise
            raise RowError(f"{cached.dataset_id}: {text}", key="data.subset") from None
    if split not in splits:
        raise RowError(f"{split!r} is not a split of {cached.dataset_id}{_did_you_mean(split, list(splits))}; its "
                       f"splits: {', '.join(splits)}", key=split_key)
    return splits[split]


@contextmanager
def _offline(datasets):
    # datasets reads HF_HUB_OFFLINE once, at import (transformers may have imported it before this
    # process could set it), and asks the hub first for an id unless it is set: set it for the call
    before = datasets.config.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE = before


def _fetch_command(dataset_id: str, subset: str | None) -> str:
    arguments = ", ".join(repr(a) for a in (dataset_id, subset) if a is not None)
    return f'python -c "import datasets; datasets.load_dataset({arguments})"'


def _did_you_mean(value: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(value, allowed, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _snake(name: str) -> str:
    """``datasets.naming.camelcase_to_snakecase``, which names a dataset's cache folder (a test keeps them equal)."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    name = re.sub(r"([a-z\d])([A-Z])", r"\1_\2", name)
    return name.lower()
