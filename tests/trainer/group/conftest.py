"""What the group tests share: the rows every group trains on."""

from __future__ import annotations

import pytest

from tests.sweep.live_study import DEMO_DATA


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The first 64 train and 16 eval rows of the demo chat set, in a folder of their own."""
    folder = tmp_path_factory.mktemp("data")
    for name, rows in (("train", 64), ("eval", 16)):
        lines = (DEMO_DATA / f"{name}.jsonl").read_text().splitlines()[:rows]
        (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    return folder
