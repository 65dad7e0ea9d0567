"""The Swedish translation set: its builder on catalogs the test writes, and the rows the repo ships."""

from __future__ import annotations

import importlib.util
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sweep.live_study import STUDIES

DATA = STUDIES / "data" / "sv-translate"
BUILD = DATA / "build.py"
_spec = importlib.util.spec_from_file_location("sv_translate_build", BUILD)
build = sys.modules["sv_translate_build"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)


def write_mo(path: Path, entries: dict[str, str]) -> None:
    """A GNU .mo catalog of ``entries`` (the layout of CPython's Tools/i18n/msgfmt.py), UTF-8."""
    entries = {"": "Content-Type: text/plain; charset=UTF-8\n", **entries}
    keys = sorted(entries)
    ids, strs, spans = b"", b"", []
    for key in keys:
        k, v = key.encode(), entries[key].encode()
        spans.append((len(ids), len(k), len(strs), len(v)))
        ids, strs = ids + k + b"\0", strs + v + b"\0"
    key_start = 7 * 4 + 16 * len(keys)
    value_start = key_start + len(ids)
    key_table = [n for start, length, _, _ in spans for n in (length, key_start + start)]
    value_table = [n for _, _, start, length in spans for n in (length, value_start + start)]
    header = struct.pack("<7I", 0x950412DE, 0, len(keys), 7 * 4, 7 * 4 + 8 * len(keys), 0, 0)
    path.write_bytes(header + struct.pack(f"<{4 * len(keys)}I", *key_table, *value_table) + ids + strs)


CLEAN_A = {
    "Archive is too short": "Arkivet är för kort",
    "Could not open the file": "Kunde inte öppna filen",
    "menu\x04Open the selected item": "Öppna det markerade objektet",  # a context: kept without it
    "Building dependency tree": "Bygger beroendeträd",
}
DIRTY_A = {
    "Too short": "För kort",  # under 12 characters
    "%s: cannot open file": "%s: kan inte öppna filen",  # format directive
    "Show {count} entries now": "Visa {count} poster nu",
    "--verbose prints more text": "--verbose skriver mer text",  # leading -
    "Usage: program [options]\nMore text": "Användning: program [flaggor]\nMer text",  # two lines
    "_Open the recent file": "_Öppna den senaste filen",  # accelerator
    "<b>Automatic updates</b>": "<b>Automatiska uppdateringar</b>",  # markup
    "   indented message text": "   indragen meddelandetext",  # whitespace at an end
    "PostgreSQL Global Development": "PostgreSQL Global Development",  # untranslated
    "Adamawa Fulfulde language": "Fula",  # far shorter: not a translation of the whole
    "Singleword_identifier_here": "Ettord",
    "one file was removed\x00many files were removed": "en fil togs bort\x00flera filer togs bort",  # plural
}
CLEAN_B = {
    "Archive is too short": "Arkivet är alldeles för kort",  # the same msgid again: catalog a.mo's wins
    "Authentication failure": "Autentiseringsfel",
    "Enter new password again": "Ange nytt lösenord igen",
    "The operation was cancelled": "Åtgärden avbröts",
}


def make_catalogs(folder: Path) -> Path:
    folder.mkdir()
    write_mo(folder / "a.mo", {**CLEAN_A, **DIRTY_A})
    write_mo(folder / "b.mo", CLEAN_B)
    return folder


def run_build(locale_dir: Path, out: Path, n_train: int, n_eval: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BUILD), "--locale-dir", str(locale_dir), "--out", str(out),
                           "--train", str(n_train), "--eval", str(n_eval)], capture_output=True, text=True, timeout=60)


def read_pairs(path: Path) -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [(r["messages"][0]["content"], r["messages"][1]["content"]) for r in rows]


def test_builder_keeps_only_clean_pairs_once_each(tmp_path):
    catalogs = make_catalogs(tmp_path / "sv")
    done = run_build(catalogs, tmp_path / "out", n_train=5, n_eval=2)
    assert done.returncode == 0, done.stderr
    assert "7 clean pairs; wrote 7 rows" in done.stdout
    pairs = read_pairs(tmp_path / "out" / "train.jsonl") + read_pairs(tmp_path / "out" / "eval.jsonl")
    expected = {**{k.split("\x04")[-1]: v for k, v in CLEAN_A.items()},
                **{k: v for k, v in CLEAN_B.items() if k not in CLEAN_A}}
    assert sorted(pairs) == sorted((build.PROMPT + en, sv) for en, sv in expected.items())
    notice = (tmp_path / "out" / "NOTICE").read_text(encoding="utf-8")
    assert "(no Debian package)" in notice and "a.mo, b.mo" in notice and "7 clean pairs" in notice


def test_builder_is_deterministic_and_stable_when_a_catalog_is_added(tmp_path):
    catalogs = make_catalogs(tmp_path / "sv")
    for out in ("one", "two"):
        assert run_build(catalogs, tmp_path / out, n_train=3, n_eval=2).returncode == 0
    for name in ("train.jsonl", "eval.jsonl", "train-cpu.jsonl", "eval-cpu.jsonl", "NOTICE"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    # selection is by a hash of each msgid: a new catalog adds its pairs in place, it does not reshuffle
    write_mo(catalogs / "c.mo", {"Unknown system error occurred": "Okänt systemfel inträffade"})
    assert run_build(catalogs, tmp_path / "three", n_train=5, n_eval=3).returncode == 0
    before = [p for name in ("eval.jsonl", "train.jsonl") for p in read_pairs(tmp_path / "one" / name)]
    after = [p for name in ("eval.jsonl", "train.jsonl") for p in read_pairs(tmp_path / "three" / name)]
    assert [p for p in after if "Unknown system" not in p[0]][:5] == before


@pytest.mark.parametrize("msgid, msgstr, clean", [
    ("Could not open the file", "Kunde inte öppna filen", True),
    ("Could not open  the file", "Kunde inte öppna filen", False),  # column layout
    ("Could not open the file", "Kunde inte\töppna filen", False),
    ("Could not open the file", "Kunde inte öppna filen $HOME", False),
    ("Could not open the file", "", False),
    ("Could not open the file", "Kunde inte öppna filen " * 3, False),  # far longer
    ("x" * 141 + " y", "x" * 141 + " z", False),
])
def test_clean_pair_rules(msgid, msgstr, clean):
    assert build.is_clean(msgid, msgstr) is clean


def test_too_few_pairs_is_one_line_and_writes_nothing(tmp_path):
    catalogs = make_catalogs(tmp_path / "sv")
    done = run_build(catalogs, tmp_path / "out", n_train=100, n_eval=10)
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {catalogs}: 7 clean pairs, fewer than the 100 train + 10 eval rows asked for"
    assert not (tmp_path / "out").exists()
    done = run_build(tmp_path, tmp_path / "out", n_train=1, n_eval=1)
    assert done.returncode == 2 and "no *.mo catalogs" in done.stderr


def test_shipped_rows_are_the_studies_translation_set():
    train, evaluation = read_pairs(DATA / "train.jsonl"), read_pairs(DATA / "eval.jsonl")
    assert (len(train), len(evaluation)) == (build.N_TRAIN, build.N_EVAL)
    assert read_pairs(DATA / "train-cpu.jsonl") == train[:build.N_CPU_TRAIN]
    assert read_pairs(DATA / "eval-cpu.jsonl") == evaluation[:build.N_CPU_EVAL]
    english = [en for en, _ in train + evaluation]
    assert len(set(english)) == len(english)  # no row twice, none in both sets
    assert all(en.startswith(build.PROMPT) and build.is_clean(en[len(build.PROMPT):], sv) for en, sv in train + evaluation)
    assert "package: licence" in (DATA / "NOTICE").read_text(encoding="utf-8")
