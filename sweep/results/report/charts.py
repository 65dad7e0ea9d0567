"""The report's interactive charts: Optuna's own plotly visualisations, plus the eval-loss curves.

Optuna's ``plot_intermediate_values`` would show the curves against eval *points*; trials of
different lengths evaluate at different steps, so the curves here are drawn from each trial's
``eval_losses`` user attribute (``[[step, loss], ...]``) against the training step.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from sweep.results.report.study_data import StudyData

TARGET = "eval loss"


@dataclass
class Chart:
    """One chart of the report: a plotly figure, or a note saying why it could not be drawn."""

    key: str  # also the stem of its PNG file
    title: str
    caption: str
    figure: object | None = None
    note: str | None = None


def build_charts(data: StudyData, optuna_study) -> list[Chart]:
    """The report's charts, in the order they appear."""
    from optuna import visualization as vis

    searched = data.searched_params()
    problem = data.importance_problem()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks some plots experimental
        charts = [
            Chart("eval_curves", "Eval loss during training",
                  "Each trial's eval loss at its evaluation steps; the best trial is drawn thicker.",
                  figure=eval_curves_figure(data)),
            Chart("history", "Optimization history", "Final eval loss of each complete trial, and the best so far.",
                  figure=vis.plot_optimization_history(optuna_study, target_name=TARGET)),
            Chart("importances", "Parameter importances",
                  f"How much of the variation in eval loss each searched parameter explains (Optuna's default "
                  f"evaluator, over {len(data.complete)} complete trials: with few trials, a rough hint).",
                  figure=None if problem else vis.plot_param_importances(
                      optuna_study, params=data.varying_params(), target_name=TARGET),
                  note=problem),
            Chart("slices", "Eval loss against each hyperparameter",
                  "Every complete trial's final eval loss against the value of each searched parameter.",
                  figure=vis.plot_slice(optuna_study, params=searched, target_name=TARGET) if searched else None,
                  note=None if searched else "no parameter was searched: every trial used the same values"),
        ]
    return charts


def eval_curves_figure(data: StudyData):
    """Eval loss against training step, one line per trial that reported an evaluation."""
    import plotly.graph_objects as go

    figure = go.Figure()
    for trial, steps, losses in data.curves():
        best = trial.number == data.best.number
        figure.add_trace(go.Scatter(
            x=steps, y=losses, mode="lines+markers", name=curve_label(trial, best),
            line={"width": 4 if best else 1.5}, marker={"size": 8 if best else 5},
        ))
    figure.update_layout(xaxis_title="training step", yaxis_title=TARGET, legend_title="trial",
                         margin={"l": 60, "r": 20, "t": 30, "b": 50})
    return figure


def curve_label(trial, best: bool) -> str:
    """``#3 COMPLETE (best)`` style legend entry."""
    return f"#{trial.number} {trial.state.name}" + (" (best)" if best else "")
