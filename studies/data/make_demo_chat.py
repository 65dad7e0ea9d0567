"""Generate the tiny Swedish/English demo chat dataset.

    python studies/data/make_demo_chat.py [--out studies/data/demo]

Writes ``train.jsonl`` (400 rows) and ``eval.jsonl`` (60 rows), one
``{"messages": [...]}`` object per line (optional system message, then
user/assistant turns; about a fifth of the rows have two turns).

Every answer is a deterministic function of its question, built from a
handful of regular templates: capitals, arithmetic in words, word
translation (colours, numbers, weekdays), opposites, and "what comes
after/before". Each underlying *fact* (e.g. "the capital of Norway is
Oslo", "3 + 4 = 7", "röd = red") can be asked in several ways (Swedish or
English, either direction, either operand order). The eval rows mostly use
held-out ways of asking about facts whose other forms are in train, plus a
few rows copied verbatim from train. Stdlib only, fixed seed, output is
byte-identical between runs.
"""

import argparse
import json
import random
from pathlib import Path

SEED = 1234
N_TRAIN, N_EVAL, N_EVAL_OVERLAP = 400, 60, 5
P_MULTI_TURN, P_SYSTEM = 0.2, 0.3

# (Swedish country, English country, Swedish capital, English capital)
COUNTRIES = [
    ("Norge", "Norway", "Oslo", "Oslo"), ("Sverige", "Sweden", "Stockholm", "Stockholm"),
    ("Danmark", "Denmark", "Köpenhamn", "Copenhagen"), ("Finland", "Finland", "Helsingfors", "Helsinki"),
    ("Island", "Iceland", "Reykjavik", "Reykjavik"), ("Tyskland", "Germany", "Berlin", "Berlin"),
    ("Frankrike", "France", "Paris", "Paris"), ("Spanien", "Spain", "Madrid", "Madrid"),
    ("Italien", "Italy", "Rom", "Rome"), ("Polen", "Poland", "Warszawa", "Warsaw"),
    ("Österrike", "Austria", "Wien", "Vienna"), ("Schweiz", "Switzerland", "Bern", "Bern"),
    ("Portugal", "Portugal", "Lissabon", "Lisbon"), ("Grekland", "Greece", "Aten", "Athens"),
    ("Irland", "Ireland", "Dublin", "Dublin"), ("Estland", "Estonia", "Tallinn", "Tallinn"),
    ("Lettland", "Latvia", "Riga", "Riga"), ("Ungern", "Hungary", "Budapest", "Budapest"),
    ("Japan", "Japan", "Tokyo", "Tokyo"), ("Kanada", "Canada", "Ottawa", "Ottawa"),
]
NUM_SV = ("noll ett två tre fyra fem sex sju åtta nio tio elva tolv tretton fjorton "
          "femton sexton sjutton arton nitton tjugo").split()
NUM_EN = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
          "fourteen fifteen sixteen seventeen eighteen nineteen twenty").split()
DAYS_SV = "måndag tisdag onsdag torsdag fredag lördag söndag".split()
DAYS_EN = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
COLOURS = [("röd", "red"), ("blå", "blue"), ("grön", "green"), ("gul", "yellow"),
           ("svart", "black"), ("vit", "white"), ("brun", "brown"), ("grå", "grey"),
           ("rosa", "pink"), ("lila", "purple")]
# Opposite pairs, aligned by concept: (sv a, sv b, en a, en b). No word repeats.
OPPOSITES = [
    ("stor", "liten", "big", "small"), ("varm", "kall", "hot", "cold"),
    ("lång", "kort", "long", "short"), ("ny", "gammal", "new", "old"),
    ("snabb", "långsam", "fast", "slow"), ("glad", "ledsen", "happy", "sad"),
    ("tung", "lätt", "heavy", "light"), ("hög", "låg", "high", "low"),
    ("öppen", "stängd", "open", "closed"), ("rik", "fattig", "rich", "poor"),
    ("full", "tom", "full", "empty"), ("mjuk", "hård", "soft", "hard"),
    ("dag", "natt", "day", "night"), ("upp", "ner", "up", "down"),
    ("våt", "torr", "wet", "dry"), ("tidig", "sen", "early", "late"),
]
SYSTEM = {"sv": ["Du är en hjälpsam assistent.", "Svara kort och korrekt."],
          "en": ["You are a helpful assistant.", "Answer briefly and correctly."]}


def cap(s):
    return s[0].upper() + s[1:]


def instances():
    """All (fact_key, lang, question, answer) tuples, in a fixed order."""
    out = []
    add = lambda key, lang, q, a: out.append((key, lang, q, a))
    for sv_c, en_c, sv_cap, en_cap in COUNTRIES:
        key = ("capital", en_c)
        add(key, "sv", f"Vad är huvudstaden i {sv_c}?", f"Huvudstaden i {sv_c} är {sv_cap}.")
        add(key, "en", f"What is the capital of {en_c}?", f"The capital of {en_c} is {en_cap}.")
    for a in range(1, 11):
        for b in range(1, 11):
            key = ("plus", min(a, b), max(a, b))
            add(key, "sv", f"Vad är {NUM_SV[a]} plus {NUM_SV[b]}?",
                f"{cap(NUM_SV[a])} plus {NUM_SV[b]} är {NUM_SV[a + b]}.")
            add(key, "en", f"What is {NUM_EN[a]} plus {NUM_EN[b]}?",
                f"{cap(NUM_EN[a])} plus {NUM_EN[b]} is {NUM_EN[a + b]}.")
    for a in range(2, 11):
        for b in range(1, a):
            key = ("minus", a, b)
            add(key, "sv", f"Vad är {NUM_SV[a]} minus {NUM_SV[b]}?",
                f"{cap(NUM_SV[a])} minus {NUM_SV[b]} är {NUM_SV[a - b]}.")
            add(key, "en", f"What is {NUM_EN[a]} minus {NUM_EN[b]}?",
                f"{cap(NUM_EN[a])} minus {NUM_EN[b]} is {NUM_EN[a - b]}.")
    words = ([("colour", sv, en) for sv, en in COLOURS]
             + [("number", sv, en) for sv, en in zip(NUM_SV, NUM_EN)]
             + [("weekday", sv, en) for sv, en in zip(DAYS_SV, DAYS_EN)])
    for kind, sv, en in words:
        key = ("translate", en)
        add(key, "sv", f"Vad heter {sv} på engelska?", f"{cap(sv)} heter {en} på engelska.")
        add(key, "en", f"What is {en} in Swedish?", f"{cap(en)} in Swedish is {sv}.")
    for i, (sa, sb, ea, eb) in enumerate(OPPOSITES):
        key = ("opposite", i)
        for x, y in ((sa, sb), (sb, sa)):
            add(key, "sv", f"Vad är motsatsen till {x}?", f"Motsatsen till {x} är {y}.")
        for x, y in ((ea, eb), (eb, ea)):
            add(key, "en", f"What is the opposite of {x}?", f"The opposite of {x} is {y}.")
    for i in range(7):
        j = (i + 1) % 7
        key = ("day", i)
        add(key, "sv", f"Vilken dag kommer efter {DAYS_SV[i]}?", f"Efter {DAYS_SV[i]} kommer {DAYS_SV[j]}.")
        add(key, "sv", f"Vilken dag kommer före {DAYS_SV[j]}?", f"Före {DAYS_SV[j]} kommer {DAYS_SV[i]}.")
        add(key, "en", f"What day comes after {DAYS_EN[i]}?", f"After {DAYS_EN[i]} comes {DAYS_EN[j]}.")
        add(key, "en", f"What day comes before {DAYS_EN[j]}?", f"Before {DAYS_EN[j]} comes {DAYS_EN[i]}.")
    for n in range(20):
        key = ("next", n)
        add(key, "sv", f"Vilket tal kommer efter {NUM_SV[n]}?", f"Efter {NUM_SV[n]} kommer {NUM_SV[n + 1]}.")
        add(key, "en", f"What number comes after {NUM_EN[n]}?", f"After {NUM_EN[n]} comes {NUM_EN[n + 1]}.")
    return out


def split(items, n_held, rng):
    """Hold out n_held instances, never the last remaining form of a fact."""
    remaining = {}
    for key, *_ in items:
        remaining[key] = remaining.get(key, 0) + 1
    order = list(range(len(items)))
    rng.shuffle(order)
    held = set()
    for i in order:
        key = items[i][0]
        if len(held) < n_held and remaining[key] > 1:
            held.add(i)
            remaining[key] -= 1
    train = [it for i, it in enumerate(items) if i not in held]
    return train, [items[i] for i in sorted(held)]


def make_rows(pool, n_rows, rng):
    """Turn instances into chat rows: cycle through shuffled pool, sometimes 2 turns."""
    queue, rows = [], []

    def take(lang=None):
        if not queue:
            queue.extend(rng.sample(pool, len(pool)))
        if lang is not None:  # prefer a follow-up in the same language
            for k in range(len(queue) - 1, -1, -1):
                if queue[k][1] == lang:
                    return queue.pop(k)
        return queue.pop()

    while len(rows) < n_rows:
        first = take()
        turns = [first]
        if rng.random() < P_MULTI_TURN:
            turns.append(take(first[1]))
        messages = []
        if rng.random() < P_SYSTEM:
            messages.append({"role": "system", "content": rng.choice(SYSTEM[first[1]])})
        for _, _, q, a in turns:
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        rows.append({"messages": messages})
    return rows


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "demo"))
    args = ap.parse_args()
    rng = random.Random(SEED)
    train_pool, held_out = split(instances(), 70, rng)
    train = make_rows(train_pool, N_TRAIN, rng)
    eval_rows = make_rows(held_out, N_EVAL - N_EVAL_OVERLAP, rng)
    eval_rows += rng.sample(train, N_EVAL_OVERLAP)  # a few exact overlaps with train
    rng.shuffle(eval_rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "eval.jsonl", eval_rows)
    print(f"wrote {len(train)} train / {len(eval_rows)} eval rows to {out}")


if __name__ == "__main__":
    main()
