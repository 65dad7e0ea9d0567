"""Reading dataset rows and recognising their format, in plain Python.

Shared by the trainer and by the orchestrator's pre-flight check (which must not import
``datasets``). A row is chat (``messages``: a list of ``{role, content}``), alpaca
(``instruction``, optional ``input``, ``output``) or plain ``text``. Alpaca rows become a
user/assistant conversation so that both get the same chat template and response-only loss.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

FORMATS = ("chat", "alpaca", "text")
ROLES = {"system", "user", "assistant", "tool"}


class RowError(ValueError):
    """A dataset problem a user must fix; the message names the file and the row."""


def row_format(row: Any) -> str | None:
    """The format of one row, or None when it matches none of the three."""
    if not isinstance(row, dict):
        return None
    messages = row.get("messages")
    if isinstance(messages, list) and messages and all(
        isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str) for m in messages
    ):
        return "chat" if any(m["role"] == "assistant" for m in messages) else None
    if isinstance(row.get("instruction"), str) and isinstance(row.get("output"), str):
        return "alpaca" if isinstance(row.get("input", ""), (str, type(None))) else None
    if isinstance(row.get("text"), str) and row["text"]:
        return "text"
    return None


def read_jsonl(path: Path) -> list[dict]:
    """All rows of a JSONL file; a line that is not JSON is a :class:`RowError` naming it."""
    rows = []
    with Path(path).open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise RowError(f"{path}:{number}: not valid JSON ({e.msg})") from None
    return rows


def check_format(rows: list[dict], where: str, declared: str = "auto") -> str:
    """The one format all rows share; raises :class:`RowError` naming the first row that differs."""
    if not rows:
        raise RowError(f"{where}: no rows")
    expected = None if declared == "auto" else declared
    for number, row in enumerate(rows, 1):
        found = row_format(row)
        if found is None:
            keys = sorted(row) if isinstance(row, dict) else type(row).__name__
            raise RowError(
                f"{where}: row {number} is in none of the formats chat (messages with an assistant turn), "
                f"alpaca (instruction/input/output) or text; its keys are {keys}"
            )
        if expected is None:
            expected = found
        elif found != expected:
            raise RowError(f"{where}: row {number} is {found} but the rows are {expected}; use one format per file")
    return expected


def as_messages(row: dict, fmt: str) -> list[dict[str, str]]:
    """A chat or alpaca row as a list of messages."""
    if fmt == "chat":
        return [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
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
