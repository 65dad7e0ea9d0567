"""``python -m sweep report``: a study's results as one self-contained HTML file plus PNG charts.

The page holds the eval-loss curves of all trials, the best configuration, parameter importances,
eval loss against each hyperparameter, and the sample generations of the best trials side by side.
Charts are Optuna's plotly visualisations where one fits (history, importances, slices); the PNGs
are their matplotlib counterparts. Imports plotly and matplotlib inside functions only.
"""

from __future__ import annotations

import os
from pathlib import Path

from sweep.errors import UserError
from sweep.study.trial_attrs import CONFIG

REPORT_FILE = "report.html"
SAMPLE_TRIALS = 3  # best trials whose sample generations are shown side by side


def write_report(optuna_study, name: str, description: str, out: Path) -> list[Path]:
    """Write ``report.html`` and the charts' PNGs into ``out``; returns the files written, the page first."""
    from sweep.results.report.charts import build_charts
    from sweep.results.report.page import render_page
    from sweep.results.report.pngs import write_pngs
    from sweep.results.report.study_data import study_data

    data = study_data(optuna_study, name, description)
    if not data.complete:
        raise UserError(f"study {name} has no complete trial yet: nothing to report "
                        f"(see `python -m sweep status --study {name}`)")
    charts = build_charts(data, optuna_study)
    page = render_page(data, charts, optuna_study.user_attrs.get(CONFIG), SAMPLE_TRIALS)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pngs = write_pngs(data, optuna_study, charts, out)
    report = out / REPORT_FILE
    partial = out / f".{REPORT_FILE}.partial"
    partial.write_text(page, encoding="utf-8")
    os.replace(partial, report)  # a reader never sees half a page
    return [report, *pngs]
