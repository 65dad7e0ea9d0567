"""A group member's events as the tests compare them."""

from __future__ import annotations

import json


def events(folder, kind: str) -> list[dict]:
    """The trial's events of ``kind`` (``eval``, ``progress``, ``setup``...), without their timestamps."""
    found = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    return [{k: v for k, v in e.items() if k != "time"} for e in found if e["event"] == kind]
