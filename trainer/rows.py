"""Reading dataset rows and recognising their format, in plain Python.

Used by the one data check (:mod:`trainer.data_check`), which the trainer and the orchestrator's
pre-flight both run; the orchestrator must not import ``datasets``: only a folder saved with
``datasets`` needs it, and the orchestrator reads JSONL files only. A row is chat (``messages``: a list of ``{role, content}``), ShareGPT (``conversations``: a
list of ``{from, value}``, ``from`` one of human/gpt/system/...), alpaca (``instruction``, optional
``input``, ``output``) or plain ``text``. ShareGPT and alpaca rows become user/assistant
conversations, so all three get the same chat template and response-only loss.
"""

from __future__ import annotations

import codecs
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FORMATS = ("chat", "sharegpt", "alpaca", "text")
ROLES = {"system", "user", "assistant", "tool"}
# ShareGPT's speakers as chat roles (axolotl's and LLaMA-Factory's readings of the format)
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "function_call": "assistant", "observation": "tool", "tool": "tool"}
SAVED_DATASET_FILES = ("dataset_info.json", "state.json")  # what Dataset.save_to_disk writes beside the data
SAVED_SPLITS_FILE = "dataset_dict.json"  # what DatasetDict.save_to_disk writes instead


class RowError(ValueError):
    """A dataset problem a user must fix; the message names the file and the row, ``key`` the study file's key."""

    def __init__(self, message: str, key: str = "data") -> None:
        super().__init__(message)
        self.key = key


def check_saved_dataset(folder: Path) -> None:
    """A folder must be one dataset saved with ``Dataset.save_to_disk``; checked by its files, without ``datasets``."""
    if (folder / SAVED_SPLITS_FILE).is_file():
        try:
            splits = json.loads((folder / SAVED_SPLITS_FILE).read_text(encoding="utf-8")).get("splits") or []
        except (OSError, ValueError, AttributeError):
            splits = []
        example = folder / (splits[0] if splits else "train")
        raise RowError(f"{folder} holds several splits ({', '.join(splits) or 'a DatasetDict'}) saved with datasets; "
                       f"give one split's folder, e.g. {example}")
    if not all((folder / name).is_file() for name in SAVED_DATASET_FILES):
        jsonl = sorted(p.name for p in folder.glob("*.jsonl"))[:3]
        hint = f"; it holds {', '.join(jsonl)}: give the file itself" if jsonl else ""
        raise RowError(f"{folder} is a folder but not a dataset saved with datasets' save_to_disk (no "
                       f"{' or '.join(SAVED_DATASET_FILES)}){hint}")


def row_format(row: Any) -> str | None:
    """The format of one row, or None when it matches none of the three."""
    if not isinstance(row, dict):
        return None
    messages = row.get("messages")
    if isinstance(messages, list) and messages and all(
        isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str) for m in messages
    ):
        return "chat" if any(m["role"] == "assistant" for m in messages) else None
    turns = row.get("conversations")
    if isinstance(turns, list) and turns and all(
        isinstance(t, dict) and t.get("from") in SHAREGPT_ROLES and isinstance(t.get("value"), str) for t in turns
    ):
        return "sharegpt" if any(SHAREGPT_ROLES[t["from"]] == "assistant" for t in turns) else None
    if isinstance(row.get("instruction"), str) and isinstance(row.get("output"), str):
        return "alpaca" if isinstance(row.get("input", ""), (str, type(None))) else None
    if isinstance(row.get("text"), str) and row["text"]:
        return "text"
    return None


def read_jsonl(path: Path) -> list[dict]:
    """All rows of a JSONL file; see :func:`read_numbered_jsonl`."""
    return read_numbered_jsonl(path)[0]


def read_numbered_jsonl(path: Path) -> tuple[list[dict], list[int]]:
    """The rows of a JSONL file and the line each came from (blank lines are skipped).

    The file must be UTF-8 text (a UTF-8 byte-order mark is allowed); a line that is not UTF-8, holds
    NUL bytes (binary data, UTF-16) or is not JSON is a :class:`RowError` naming the file and the line.
    """
    rows, lines = [], []
    with Path(path).open("rb") as f:
        for number, raw in enumerate(f, 1):
            if number == 1:
                if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                    raise RowError(f"{path}: UTF-16 text, not UTF-8: save it as UTF-8 JSONL")
                raw = raw.removeprefix(codecs.BOM_UTF8)
            if b"\0" in raw:
                raise RowError(f"{path}:{number}: NUL bytes: binary data or UTF-16 text, not UTF-8 JSONL")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise RowError(f"{path}:{number}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                               "save it as UTF-8 JSONL") from None
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise RowError(f"{path}:{number}: not valid JSON ({e.msg})") from None
            lines.append(number)
    return rows, lines


def check_format(rows: list[dict], where: str, declared: str = "auto", lines: Sequence[int] | None = None) -> str:
    """The one format all rows share; raises :class:`RowError` naming the first row that differs.

    ``lines`` (from :func:`read_numbered_jsonl`) names rows by their line in the file, else by their position.
    """
    if not rows:
        raise RowError(f"{where}: no rows")
    expected = None if declared == "auto" else declared
    for index, row in enumerate(rows):
        label = f"line {lines[index]}" if lines else f"row {index + 1}"
        found = row_format(row)
        if found is None:
            raise RowError(f"{where}: {label}{_why_in_no_format(row)}")
        if expected is None:
            expected = found
        elif found != expected:
            raise RowError(f"{where}: {label} is {found} but the rows are {expected}; use one format per file")
    return expected


def _why_in_no_format(row: Any) -> str:
    """What keeps a row out of every format, as the end of a sentence that starts with the row's label."""
    messages = row.get("messages") if isinstance(row, dict) else None
    if isinstance(messages, list) and messages:
        for i, m in enumerate(messages):
            if not isinstance(m, dict):
                return f": messages[{i}] is {type(m).__name__}, not an object with role and content"
            if m.get("role") not in ROLES:
                return f": messages[{i}].role {m.get('role')!r} is not allowed; allowed: {', '.join(sorted(ROLES))}"
            if not isinstance(m.get("content"), str):
                return f": messages[{i}].content is {type(m.get('content')).__name__}, not a string"
        return ": messages has no assistant turn, so nothing would be learned from it"
    turns = row.get("conversations") if isinstance(row, dict) else None
    if isinstance(turns, list) and turns:
        for i, t in enumerate(turns):
            if not isinstance(t, dict) or t.get("from") not in SHAREGPT_ROLES:
                speaker = t.get("from") if isinstance(t, dict) else type(t).__name__
                return (f": conversations[{i}].from {speaker!r} is not allowed; allowed: "
                        f"{', '.join(sorted(SHAREGPT_ROLES))}")
            if not isinstance(t.get("value"), str):
                return f": conversations[{i}].value is {type(t.get('value')).__name__}, not a string"
        return ": conversations has no gpt turn, so nothing would be learned from it"
    if isinstance(row, dict) and row.get("text") == "":
        return ": text is empty"
    keys = sorted(row) if isinstance(row, dict) else type(row).__name__
    return (" is in none of the formats chat (messages with an assistant turn), sharegpt (conversations with "
            f"from/value), alpaca (instruction/input/output) or text; its keys are {keys}")


def as_messages(row: dict, fmt: str) -> list[dict[str, str]]:
    """A chat, ShareGPT or alpaca row as a list of messages."""
    if fmt == "chat":
        return [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
    if fmt == "sharegpt":
        return [{"role": SHAREGPT_ROLES[t["from"]], "content": t["value"]} for t in row["conversations"]]
    prompt = row["instruction"] if not row.get("input") else f"{row['instruction']}\n\n{row['input']}"
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": row["output"]}]


def split_rows(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Deterministic train/eval split: ``round(len * fraction)`` rows go to eval."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_eval = round(len(rows) * fraction)
    eval_idx = set(order[:n_eval])
    train = [r for i, r in enumerate(rows) if i not in eval_idx]
    return train, [rows[i] for i in sorted(eval_idx)]
