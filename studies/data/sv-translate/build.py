"""Build the English -> Swedish translation chat set from Debian's Swedish gettext catalogs.

    python studies/data/sv-translate/build.py [--locale-dir /usr/share/locale/sv/LC_MESSAGES]
                                              [--out studies/data/sv-translate]

The catalogs (``*.mo``, read with the standard ``gettext`` module) hold human translations of
program messages. A pair is kept when both sides are one line of plain prose: a msgid of 12 to
140 characters and at least two words, no format directive, markup, accelerator or escape
(``% { } < > _ $ \\ & | `` and the backquote), no tab, no double space, no leading ``-``, no
whitespace at either end, a translation that differs from the msgid and is 0.5 to 2 times its
length. Plural entries are skipped; a message context is dropped. Each msgid is kept once: the
first translation met, catalogs in file-name order.

Selection is a stable hash of the msgid (``SALT``), not a shuffle: eval takes the first 300
pairs in hash order, train the next 3,000, so the rows are a function of the installed catalogs
alone and a machine with a few more catalogs changes only a few rows. Written to ``--out``:
``train.jsonl``, ``eval.jsonl``, the CPU-sized prefixes ``train-cpu.jsonl`` (128 rows) and
``eval-cpu.jsonl`` (16), and ``NOTICE`` naming each source package (``dpkg -S``) and the licence
of its ``/usr/share/doc/PACKAGE/copyright``. Each row::

    {"messages": [{"role": "user", "content": "Översätt till svenska: Archive is too short"},
                  {"role": "assistant", "content": "Arkivet är för kort"}]}

The shipped files are what every machine trains on; this script records how they were made.
Stdlib only.
"""

from __future__ import annotations

import argparse
import gettext
import hashlib
import json
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

LOCALE_DIR = Path("/usr/share/locale/sv/LC_MESSAGES")
PROMPT = "Översätt till svenska: "
SALT = "sv-translate-1"
N_TRAIN, N_EVAL, N_CPU_TRAIN, N_CPU_EVAL = 3000, 300, 128, 16
MIN_CHARS, MAX_CHARS = 12, 140
MIN_RATIO, MAX_RATIO = 0.5, 2.0
# format directives, markup, accelerators and escapes: a pair holding one is program syntax, not prose
NOT_PROSE = set("%{}<>_$\\&|`\t\n\r")


class BuildError(ValueError):
    """The catalogs cannot give the rows asked for; the message says why."""


@dataclass(frozen=True)
class Pair:
    """One kept translation and the catalog it came from."""

    english: str
    swedish: str
    catalog: str


def read_catalog(path: Path) -> list[tuple[str, str]]:
    """``(msgid, msgstr)`` of every singular entry, context dropped, in msgid order."""
    with path.open("rb") as f:
        catalog = gettext.GNUTranslations(f)._catalog
    entries = []
    for key, value in catalog.items():
        if isinstance(key, tuple):  # plural forms: ("msgid", n)
            continue
        entries.append((key.split("\x04", 1)[-1], value))
    return sorted(entries)


def _one_clean_line(text: str) -> bool:
    return bool(text) and text == text.strip() and "  " not in text and not NOT_PROSE.intersection(text)


def is_clean(msgid: str, msgstr: str) -> bool:
    """Whether a pair is one line of plain prose on both sides (the rules in the module docstring)."""
    return (
        MIN_CHARS <= len(msgid) <= MAX_CHARS
        and len(msgid.split()) >= 2
        and not msgid.startswith("-")
        and msgstr != msgid
        and _one_clean_line(msgid)
        and _one_clean_line(msgstr)
        and MIN_RATIO <= len(msgstr) / len(msgid) <= MAX_RATIO
    )


def collect(paths: list[Path]) -> list[Pair]:
    """The clean pairs of all catalogs, each msgid once (its first translation, catalogs in name order)."""
    kept: dict[str, Pair] = {}
    for path in sorted(paths, key=lambda p: p.name):
        for msgid, msgstr in read_catalog(path):
            if msgid not in kept and is_clean(msgid, msgstr):
                kept[msgid] = Pair(msgid, msgstr, path.name)
    return list(kept.values())


def _rank(pair: Pair) -> str:
    return hashlib.sha256(f"{SALT}\0{pair.english}".encode()).hexdigest()


def select(pairs: list[Pair], n_train: int, n_eval: int) -> tuple[list[Pair], list[Pair]]:
    """``(train, eval)``: eval the first ``n_eval`` pairs in hash order, train the next ``n_train``."""
    ranked = sorted(pairs, key=_rank)
    return ranked[n_eval:n_eval + n_train], ranked[:n_eval]


def chat_row(pair: Pair) -> dict:
    return {"messages": [{"role": "user", "content": PROMPT + pair.english},
                         {"role": "assistant", "content": pair.swedish}]}


def write_jsonl(path: Path, pairs: list[Pair]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for pair in pairs:
            f.write(json.dumps(chat_row(pair), ensure_ascii=False) + "\n")


def owning_packages(paths: list[Path]) -> dict[str, str]:
    """Catalog file name -> the Debian package that installed it (``dpkg -S``); absent when none did."""
    try:
        done = subprocess.run(["dpkg", "-S", *map(str, paths)], capture_output=True, text=True, check=False)
    except FileNotFoundError:  # not a Debian system
        return {}
    owners = {}
    for line in done.stdout.splitlines():
        packages, _, path = line.partition(": ")
        if packages and path and not line.startswith("diversion"):
            owners[Path(path).name] = packages.split(",")[0].split(":")[0].strip()
    return owners


_LICENCE_NAMES = [  # (pattern in a free-form copyright file, short name)
    (r"GNU General Public License|\bGPL", "GPL"),
    (r"GNU Lesser General Public License|GNU Library General Public License|\bLGPL", "LGPL"),
    (r"GNU Free Documentation License|\bGFDL", "GFDL"),
    (r"PostgreSQL", "PostgreSQL"),
    (r"Apache License", "Apache"),
    (r"MIT License|Permission is hereby granted, free of charge", "MIT"),
    (r"Redistribution and use in source and binary forms", "BSD"),
]


def licence_of(package: str, doc_root: Path = Path("/usr/share/doc")) -> str:
    """The licence in ``/usr/share/doc/PACKAGE/copyright``: the ``Files: *`` stanza's in the
    machine-readable format, else every well-known licence its free text names."""
    path = doc_root / package / "copyright"
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "unknown (no copyright file)"
    for stanza in re.split(r"\n\s*\n", text):
        if re.search(r"^Files:\s*\*\s*$", stanza, re.MULTILINE):
            found = re.search(r"^License:\s*(\S.*)$", stanza, re.MULTILINE)
            if found:
                return found.group(1).strip()
    named = [name for pattern, name in _LICENCE_NAMES if re.search(pattern, text)]
    return f"{' / '.join(named) or 'not named'} (free text: read {path})"


def write_notice(path: Path, train: list[Pair], evaluation: list[Pair], owners: dict[str, str],
                 locale_dir: Path, n_catalogs: int, n_pairs: int) -> None:
    """NOTICE: where the rows come from, per source package: its catalogs, its licence, its row counts."""
    used_train = Counter(p.catalog for p in train)
    used_eval = Counter(p.catalog for p in evaluation)
    by_package: dict[str, list[str]] = {}
    for catalog in sorted(set(used_train) | set(used_eval)):
        by_package.setdefault(owners.get(catalog, "(no Debian package)"), []).append(catalog)
    lines = [
        "English -> Swedish translation rows (train.jsonl, eval.jsonl and their -cpu prefixes).",
        "",
        f"Built by build.py from the {n_catalogs} Swedish gettext catalogs in {locale_dir} of a Debian",
        f"system: {n_pairs} clean pairs found, {len(evaluation)} eval and {len(train)} train rows selected.",
        "Each row is a message of a Debian package and its Swedish translation, made by that",
        "package's translators and distributed under the package's licence, named below from",
        "/usr/share/doc/PACKAGE/copyright (the full terms are there and in the package's source).",
        "",
        "package: licence; rows; catalogs",
    ]
    for package in sorted(by_package):
        catalogs = by_package[package]
        licence = licence_of(package) if package in owners.values() else "unknown"
        n_train = sum(used_train[c] for c in catalogs)
        n_eval = sum(used_eval[c] for c in catalogs)
        lines.append(f"{package}: {licence}; {n_train} train + {n_eval} eval rows; {', '.join(catalogs)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def build(locale_dir: Path, out: Path, n_train: int = N_TRAIN, n_eval: int = N_EVAL) -> tuple[int, int]:
    """Write the rows and NOTICE to ``out``; returns ``(clean pairs found, rows written)``."""
    paths = sorted(locale_dir.glob("*.mo"))
    if not paths:
        raise BuildError(f"{locale_dir}: no *.mo catalogs there (Debian keeps Swedish ones in {LOCALE_DIR})")
    pairs = collect(paths)
    if len(pairs) < n_train + n_eval:
        raise BuildError(f"{locale_dir}: {len(pairs)} clean pairs, fewer than the "
                         f"{n_train} train + {n_eval} eval rows asked for")
    train, evaluation = select(pairs, n_train, n_eval)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "eval.jsonl", evaluation)
    write_jsonl(out / "train-cpu.jsonl", train[:N_CPU_TRAIN])
    write_jsonl(out / "eval-cpu.jsonl", evaluation[:N_CPU_EVAL])
    write_notice(out / "NOTICE", train, evaluation, owning_packages(paths), locale_dir, len(paths),
                 len(pairs))
    return len(pairs), len(train) + len(evaluation)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--locale-dir", type=Path, default=LOCALE_DIR, help="folder of Swedish *.mo catalogs")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="where the rows go")
    parser.add_argument("--train", type=int, default=N_TRAIN, help="train rows")
    parser.add_argument("--eval", type=int, default=N_EVAL, help="eval rows")
    args = parser.parse_args(argv)
    try:
        found, written = build(args.locale_dir, args.out, args.train, args.eval)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{found} clean pairs; wrote {written} rows and NOTICE to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
