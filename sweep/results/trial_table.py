"""Trials as plain data (for ``--json``) and as a rich table, shared by ``status`` and ``best``.

A trial's values are named by the study's metrics (:class:`~sweep.schema.objectives.Objectives`):
``value`` is the one value of a single-metric study (as before objectives could be chosen), ``values``
maps each metric's label to its value. In a multi-objective study the trials on the Pareto front are
marked (``pareto_front`` in JSON, ``*`` in the table).
"""

from __future__ import annotations

import datetime as dt

from rich.table import Table

from sweep.run.progress import format_params
from sweep.schema.objectives import Objectives
from sweep.study.trial_attrs import ADAPTER_PATH, CHRF, FAIL_REASON


def trial_record(trial, objectives: Objectives | None = None, front: set[int] | None = None) -> dict:
    """The JSON shape of a trial: number, state, params, value(s), user_attrs (and timing); with ``front``
    (the numbers of a multi-objective study's Pareto front) also whether it is on it."""
    objectives = objectives or Objectives()
    duration = (trial.datetime_complete - trial.datetime_start).total_seconds() \
        if trial.datetime_complete and trial.datetime_start else None
    values = trial.values
    record = {
        "number": trial.number, "state": trial.state.name, "params": trial.params,
        "value": values[0] if values and not objectives.multi else None,
        "values": dict(zip(objectives.labels, values, strict=True)) if values else None,
        "user_attrs": trial.user_attrs, "duration_seconds": duration,
        "datetime_start": _iso(trial.datetime_start), "datetime_complete": _iso(trial.datetime_complete),
    }
    if front is not None:
        record["pareto_front"] = trial.number in front
    return record


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def trials_table(records: list[dict], title: str, objectives: Objectives | None = None) -> Table:
    """One row per trial: its state, parameters, value for each metric, chrF, duration, adapter or reason."""
    objectives = objectives or Objectives()
    table = Table(title=title, caption="* on the Pareto front" if objectives.multi else None)
    marked = objectives.multi
    quality = "chrf" not in objectives.names  # chrF beside the objective, unless it is one
    columns = ["#", *(["front"] if marked else []), "state", "params", *objectives.labels, *(["chrF"] if quality else []),
               "duration", "adapter / reason"]
    for column in columns:
        table.add_column(column, overflow="fold")
    for r in records:
        attrs = r["user_attrs"]
        values = [f"{v:.4f}" for v in r["values"].values()] if r["values"] else ["-"] * len(objectives.labels)
        chrf = [f"{attrs[CHRF]:.1f}" if attrs.get(CHRF) is not None else "-"] if quality else []
        duration = f"{r['duration_seconds']:.0f}s" if r["duration_seconds"] is not None else "-"
        where = attrs.get(ADAPTER_PATH) or attrs.get(FAIL_REASON) or ""
        front = (["*" if r.get("pareto_front") else ""]) if marked else []
        table.add_row(str(r["number"]), *front, r["state"], format_params(r["params"]), *values, *chrf, duration, where)
    return table
