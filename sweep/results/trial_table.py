"""Trials as plain data (for ``--json``) and as a rich table, shared by ``status`` and ``best``."""

from __future__ import annotations

import datetime as dt

from rich.table import Table

from sweep.run.progress import format_params
from sweep.study.trial_attrs import ADAPTER_PATH, CHRF, FAIL_REASON


def trial_record(trial) -> dict:
    """The JSON shape of a trial: number, state, params, value, user_attrs (and timing)."""
    duration = (trial.datetime_complete - trial.datetime_start).total_seconds() \
        if trial.datetime_complete and trial.datetime_start else None
    return {
        "number": trial.number, "state": trial.state.name, "params": trial.params, "value": trial.value,
        "user_attrs": trial.user_attrs, "duration_seconds": duration,
        "datetime_start": _iso(trial.datetime_start), "datetime_complete": _iso(trial.datetime_complete),
    }


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def trials_table(records: list[dict], title: str) -> Table:
    table = Table(title=title)
    for column in ("#", "state", "params", "eval_loss", "chrF", "duration", "adapter / reason"):
        table.add_column(column, overflow="fold")
    for r in records:
        attrs = r["user_attrs"]
        value = f"{r['value']:.4f}" if r["value"] is not None else "-"
        quality = f"{attrs[CHRF]:.1f}" if attrs.get(CHRF) is not None else "-"
        duration = f"{r['duration_seconds']:.0f}s" if r["duration_seconds"] is not None else "-"
        where = attrs.get(ADAPTER_PATH) or attrs.get(FAIL_REASON) or ""
        table.add_row(str(r["number"]), r["state"], format_params(r["params"]), value, quality, duration, where)
    return table
