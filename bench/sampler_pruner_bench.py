"""Which sampler and pruner find the best configuration soonest, on recorded tiny-model learning curves.

    nice python bench/sampler_pruner_bench.py                        # all samplers x pruners, 20 seeds
    nice python bench/sampler_pruner_bench.py --samplers tpe --pruners median none --seeds 50
    nice python bench/sampler_pruner_bench.py --charge train         # training seconds only
    nice python bench/sampler_pruner_bench.py --lr-range             # learning rate as a log range

Every study runs through :func:`bench.replay.replay_study`: the study file's sampler and pruner
builders, the real :class:`~sweep.schema.search_space.SearchSpace` and the objective's own reporting and
pruning code, with each trial answered from ``bench/data/tiny_grid.jsonl`` (recorded by
``bench/record_grid.py``) and charged the recorded seconds up to where it stopped. Samplers and
pruners take their study-file defaults; only the seed changes.

Per sampler x pruner, over the seeds:

* **to 1 %**: GPU-seconds spent until the study's best finished trial is within 1 % of the grid's
  best eval loss, as a share of what the full grid cost (median, and the quartiles). A study that
  has not got there after ``--cap`` of the grid's seconds counts as not reached (infinite); so does
  one whose sampler got stuck: ``STUCK`` trials in a row that only re-proposed completed
  configurations (free, see below), or ``MAX_TRIALS`` trials.
* **regret @ budget**: (best eval loss found within ``--budget`` of the grid's seconds - grid best)
  / grid best, median over seeds.
* **trials to 1 %**: trials (repeats included) until then, median.
* **repeats**: share of trials that proposed an already completed configuration, answered from it
  at no cost (:mod:`sweep.run.repeats`).
* **pruned**: share of the trained trials pruned; **top 10 % pruned**: share of the trials of winning
  configurations (final eval loss among the best tenth of the grid) that were pruned. A pruner
  that spares the winners prunes them less often than trials in general.

With ``--lr-range`` the study declares the learning rate as a log range, as real study files do
(the numeric samplers GP, CMA-ES and QMC then search it as a number), and each sampled rate is
answered with the nearest recorded one. Otherwise every parameter but the epochs is a choice, which
CMA-ES and QMC do not model: they hand those to their independent samplers (TPE and random).

The ``median (by step)`` row reports the global step to the pruner instead of the eval point, as a
study with ``training.eval_steps`` would: what the eval-points design is compared against.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pydantic import ValidationError  # noqa: E402

from bench.replay import CurveTable, config_key, replay_study  # noqa: E402
from sweep.schema.pruners import USED_BY, PrunerConfig  # noqa: E402
from sweep.schema.samplers import SamplerConfig  # noqa: E402
from sweep.schema.study_file import SearchConfig  # noqa: E402

SAMPLERS = ["tpe", "random", "grid", "gp", "cmaes", "qmc"]
PRUNERS = ["none", "median", "percentile", "successive_halving", "hyperband", "patient"]
TOLERANCE = 0.01
MAX_TRIALS = 600
STUCK = 50  # this many repeats in a row: the sampler only proposes what it has seen (repeats are free)


def top_decile(table: CurveTable) -> set[tuple]:
    """The configurations whose final eval loss is among the best tenth of the grid: the ones that win."""
    ranked = sorted(table.curves, key=lambda key: table.curves[key].eval_loss)
    return set(ranked[: math.ceil(len(ranked) / 10)])


def run_one(table: CurveTable, sampler: str, pruner: str, seed: int, args, report_points: bool = True) -> dict:
    """One seeded study; returns its time to within 1 %, its regret at the budget and pruning counts."""
    grid_seconds = table.total_seconds(args.charge)
    cap, budget = args.cap * grid_seconds, args.budget * grid_seconds
    target = table.best_value * (1 + TOLERANCE)
    sampler_options = {k: v for k, v in args.sampler_option.items() if k in SamplerConfig.model_fields}
    pruner_options = {k: v for k, v in args.pruner_option.items() if pruner in USED_BY.get(k, ())}
    fields = dict(n_trials=MAX_TRIALS, params=table.space(lr_range=args.lr_range),
                  sampler=SamplerConfig(name=sampler, seed=seed, **sampler_options),
                  pruner=PrunerConfig(name=pruner, **pruner_options))
    try:
        search = SearchConfig(**fields)
    except ValidationError:  # a combination study files refuse (gp with pruning): measured to show why
        search = SearchConfig.model_construct(**fields, enqueue=[])

    def stop(objective) -> bool:
        reached = objective.best_value <= target
        stuck = len(objective.log) >= STUCK and all(e["repeat"] for e in objective.log[-STUCK:])
        return stuck or objective.spent_seconds >= cap or (reached and objective.spent_seconds >= budget)

    objective = replay_study(search, table, stop=stop, report_points=report_points, charge=args.charge)
    log = objective.log
    reached = next((e["spent"] for e in log if e["value"] is not None and e["value"] <= target), math.inf)
    within_budget = [e["value"] for e in log if e["value"] is not None and e["spent"] <= budget]
    best_in_budget = min(within_budget, default=math.inf)
    trained = [e for e in log if not e["repeat"]]
    top = top_decile(table)
    winners = [e for e in trained if config_key(table.lookup(e["values"], snap_lr=args.lr_range).params) in top]
    return {
        "to_target": reached / grid_seconds,
        "trials_to_target": next((i + 1 for i, e in enumerate(log) if e["value"] is not None and e["value"] <= target),
                                 math.inf),
        "regret": (best_in_budget - table.best_value) / table.best_value,
        "trials": len(trained), "pruned": sum(e["value"] is None for e in trained),
        "repeats": len(log) - len(trained),
        "winners": len(winners), "winners_pruned": sum(e["value"] is None for e in winners),
    }


def refused(sampler: str, pruner: str) -> bool:
    """Whether a study file may not combine this sampler and pruner."""
    try:
        SearchConfig(n_trials=1, sampler=SamplerConfig(name=sampler), pruner=PrunerConfig(name=pruner))
    except ValidationError:
        return True
    return False


def summarize(label: tuple[str, str], runs: list[dict]) -> dict:
    to = sorted(r["to_target"] for r in runs)
    q1, med, q3 = (statistics.quantiles(to, n=4, method="inclusive") if len(to) > 1 else [to[0]] * 3)
    trials = sum(r["trials"] for r in runs)
    winners = sum(r["winners"] for r in runs)
    return {
        "sampler": label[0], "pruner": label[1], "median": med, "q1": q1, "q3": q3,
        "reached": sum(math.isfinite(t) for t in to), "seeds": len(runs),
        "trials_to_target": statistics.median(r["trials_to_target"] for r in runs),
        "regret": statistics.median(r["regret"] for r in runs),
        "pruned": sum(r["pruned"] for r in runs) / trials,
        "repeats": sum(r["repeats"] for r in runs) / (trials + sum(r["repeats"] for r in runs)),
        "winners_pruned": sum(r["winners_pruned"] for r in runs) / winners if winners else math.nan,
    }


def percent(x: float) -> str:
    return "not reached" if math.isinf(x) else f"{100 * x:.0f} %"


def table_markdown(rows: list[dict], args) -> str:
    head = (f"| sampler | pruner | to 1 % of best: median [q1, q3] of grid s | reached | trials to 1 % | "
            f"regret @ {100 * args.budget:.0f} % | repeats | pruned | top 10 % pruned |\n"
            "|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        trials = "-" if math.isinf(r["trials_to_target"]) else f"{r['trials_to_target']:.0f}"
        regret = "-" if math.isinf(r["regret"]) else f"{100 * r['regret']:.2f} %"
        lines.append(f"| {r['sampler']} | {r['pruner']} | {percent(r['median'])} [{percent(r['q1'])}, "
                     f"{percent(r['q3'])}] | {r['reached']}/{r['seeds']} | {trials} | {regret} | {100 * r['repeats']:.0f} % | "
                     f"{100 * r['pruned']:.0f} % | {100 * r['winners_pruned']:.0f} % |")
    return head + "\n".join(lines) + "\n"


def option(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` with VALUE read as YAML (so 10, 0.5, true and auto come out typed)."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: give KEY=VALUE")
    return key, yaml.safe_load(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=ROOT / "bench" / "data" / "tiny_grid.jsonl")
    parser.add_argument("--samplers", nargs="+", default=SAMPLERS, choices=SAMPLERS)
    parser.add_argument("--pruners", nargs="+", default=PRUNERS, choices=PRUNERS)
    parser.add_argument("--seeds", type=int, default=20, help="seeds per combination (0, 1, ...)")
    parser.add_argument("--budget", type=float, default=0.3, help="fixed budget for the regret, share of the grid")
    parser.add_argument("--cap", type=float, default=1.0, help="a study stops at this share of the grid's seconds")
    parser.add_argument("--charge", choices=["wall", "train"], default="wall", help="what a trial's seconds count")
    parser.add_argument("--lr-range", action="store_true",
                        help="search the learning rate as a log range, answered by the nearest recorded rate")
    parser.add_argument("--sampler-option", type=option, action="append", default=[], metavar="KEY=VALUE",
                        help="override a sampler default, e.g. n_startup_trials=10 (repeatable)")
    parser.add_argument("--pruner-option", type=option, action="append", default=[], metavar="KEY=VALUE",
                        help="override a pruner default for the pruners that use it, e.g. n_warmup_steps=2")
    args = parser.parse_args()
    args.sampler_option, args.pruner_option = dict(args.sampler_option), dict(args.pruner_option)
    warnings.filterwarnings("ignore")  # Optuna's experimental-feature notes, once per study
    table = CurveTable.load(args.table)
    print(f"{args.table.name}: {len(table.curves)} configurations, best eval loss {table.best_value:.4f}, "
          f"full grid {table.total_seconds(args.charge):.0f} s ({args.charge}); {args.seeds} seeds; "
          f"learning rate as {'a log range' if args.lr_range else 'choices'}; "
          f"sampler options {args.sampler_option or 'default'}, pruner options {args.pruner_option or 'default'}",
          flush=True)
    samplers = [s for s in args.samplers if not (args.lr_range and s == "grid")]  # a grid needs choices
    combos = [(s, p, True) for s in samplers for p in args.pruners]
    if "tpe" in args.samplers and "median" in args.pruners:
        combos.append(("tpe", "median", False))
    rows = []
    for sampler, pruner, by_point in combos:
        started = time.time()
        runs = [run_one(table, sampler, pruner, seed, args, by_point) for seed in range(args.seeds)]
        label = pruner if by_point else f"{pruner} (by step)"
        rows.append(summarize((sampler, label + (" (refused in study files)" if refused(sampler, pruner) else "")), runs))
        print(f"  {sampler} x {rows[-1]['pruner']}: median {percent(rows[-1]['median'])} "
              f"({time.time() - started:.0f} s)", file=sys.stderr, flush=True)
    rows.append({"sampler": "full grid", "pruner": "-", "median": 1.0, "q1": 1.0, "q3": 1.0, "reached": 1, "seeds": 1,
                 "trials_to_target": len(table.curves), "regret": math.inf, "repeats": 0.0, "pruned": 0.0,
                 "winners_pruned": 0.0})
    print(table_markdown(rows, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
