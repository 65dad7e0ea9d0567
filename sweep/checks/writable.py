"""Whether a folder can be made and written, asked before anything is written there.

A runs folder under a file, or on a read-only file system, would otherwise fail halfway: after
the study was created, or with a traceback from ``mkdir``. The check writes nothing: it finds the
nearest part of the path that exists and asks the kernel (``access(2)``, which also reports a
read-only mount) whether this process may create entries in it.

Example::

    unwritable_reason(Path("runs/demo"))   # None, or "/x/runs is a file, not a folder"
"""

from __future__ import annotations

import os
from pathlib import Path


def unwritable_reason(folder: Path) -> str | None:
    """Why ``folder`` (existing or to be made) cannot be written, or None when it can."""
    existing = Path(os.path.abspath(folder))
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} cannot be written (read-only, or no permission)"
    return None
