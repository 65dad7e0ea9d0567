"""The report's charts as PNG files, drawn with matplotlib (Optuna's ``visualization.matplotlib``).

Plotly's own PNG export (kaleido) drives a Chrome browser; matplotlib needs none, so the PNGs are
written the same way on any machine, offline.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from sweep.results.report.charts import Chart, curve_label, target_of
from sweep.results.report.study_data import StudyData

DPI = 120


def write_pngs(data: StudyData, optuna_study, charts: list[Chart], out: Path) -> list[Path]:
    """One PNG per chart that has a figure, named ``KEY.png`` in ``out``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")  # no display: render to files only
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    multi = data.objectives.multi
    draw = {
        "eval_curves": lambda chart: _eval_curves(data, plt),
        "pareto_front": lambda chart: vis.plot_pareto_front(optuna_study, target_names=data.objectives.titles),
        "history": lambda chart: vis.plot_optimization_history(optuna_study, **target_of(data, chart.target)),
        "importances": lambda chart: vis.plot_param_importances(
            optuna_study, params=data.varying_params(), **({} if multi else target_of(data, None))),
        "slices": lambda chart: vis.plot_slice(optuna_study, params=data.searched_params(),
                                               **target_of(data, chart.target)),
    }
    written = []
    for chart in charts:
        if chart.figure is None:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            axes = draw[chart.kind](chart)
        figure = _figure_of(axes)
        _quiet_log_ticks(figure)
        figure.suptitle(chart.title)
        path = Path(out) / f"{chart.key}.png"
        figure.savefig(path, dpi=DPI, bbox_inches="tight")
        plt.close(figure)
        written.append(path)
    return written


def _figure_of(axes):
    """The figure behind what a plot function returned: one Axes or an array of them (slices)."""
    first = axes.flat[0] if hasattr(axes, "flat") else axes
    return first.figure


def _quiet_log_ticks(figure) -> None:
    """Plain, slanted tick labels on log axes: over a narrow range (a learning rate from 0.01 to 0.02)
    matplotlib's labels in powers of ten overprint each other."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for axes in figure.axes:
        if axes.get_xscale() == "log":
            axes.xaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
            axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            axes.xaxis.set_minor_formatter(NullFormatter())
            axes.tick_params(axis="x", labelrotation=45)


def _eval_curves(data: StudyData, plt):
    figure, axes = plt.subplots(figsize=(8, 5))
    for trial, steps, losses in data.curves():
        best = data.on_front(trial)
        axes.plot(steps, losses, marker="o", linewidth=3 if best else 1.2, markersize=6 if best else 3,
                  label=curve_label(trial, best, data.objectives.multi))
    axes.set_xlabel("training step")
    axes.set_ylabel("eval loss")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return axes
