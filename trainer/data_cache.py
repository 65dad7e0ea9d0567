"""A per-study cache of the tokenised, masked datasets, keyed by everything they depend on.

Tokenising and masking a large chat set takes as long as several training steps, and every trial of a
study does the same work. The key hashes: the data files' bytes (for a Hugging Face dataset id: the
id, subset and split and the fingerprint ``datasets`` gives the cached split, which changes with
the revision the cache holds), the data section of the spec, the maximum sequence length, the tokenizer (its full serialisation and chat template), and the source of
the modules that read and encode rows. Change any of them and the key changes, so a stale entry is
never read. Entries are written under a temporary name and renamed into place.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import shutil
from pathlib import Path

from trainer.spec import TrialSpec


def cache_key(spec: TrialSpec, tokenizer) -> str:
    """A hex digest of what the encoded train and eval sets depend on."""
    import trainer.chat_data
    import trainer.chat_templates
    import trainer.data_check
    import trainer.hub_data
    import trainer.rows
    import trainer.trial_data

    h = hashlib.sha256()
    for source in trainer.data_check.sources(spec.data):
        if source.hub:
            h.update(f"{source.key}\0{source.value}\0{_hub_fingerprint(spec, source)}\n".encode())
        else:
            _hash_path(h, Path(source.value))
    h.update(spec.data.model_dump_json(exclude={"train", "eval"}).encode())
    h.update(str(spec.model.max_seq_length).encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update(backend.to_str().encode() if backend is not None else repr(sorted(tokenizer.get_vocab().items())).encode())
    h.update(json.dumps([tokenizer.chat_template, tokenizer.pad_token, tokenizer.eos_token]).encode())
    for module in (trainer.chat_data, trainer.chat_templates, trainer.data_check, trainer.hub_data, trainer.rows,
                   trainer.trial_data):
        h.update(inspect.getsource(module).encode())
    return h.hexdigest()[:24]


def _hub_fingerprint(spec: TrialSpec, source) -> str:
    from trainer.hub_data import DEFAULT_SPLIT, find_cached, load_split

    cached = find_cached(source.value, spec.data.subset, source.key)
    split = source.split or DEFAULT_SPLIT
    return f"{cached.folder}\0{load_split(cached, spec.data.subset, split, source.split_key)._fingerprint}"


def _hash_path(h, path: Path) -> None:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        h.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)


def load(cache_dir: Path, key: str):
    """(train, eval) datasets of a cached entry, or None."""
    entry = Path(cache_dir) / f"tokenized-{key}"
    if not (entry / "complete").exists():
        return None
    from datasets import load_from_disk

    return load_from_disk(str(entry / "train")), load_from_disk(str(entry / "eval"))


def store(cache_dir: Path, key: str, train, evaluation) -> None:
    entry = Path(cache_dir) / f"tokenized-{key}"
    if entry.exists():
        return
    partial = Path(cache_dir) / f".tokenized-{key}.{id(train)}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    train.save_to_disk(str(partial / "train"))
    evaluation.save_to_disk(str(partial / "eval"))
    (partial / "complete").touch()
    try:
        partial.rename(entry)
    except OSError:  # another trial stored the same entry first
        shutil.rmtree(partial, ignore_errors=True)
