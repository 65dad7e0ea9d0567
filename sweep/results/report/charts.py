"""The report's interactive charts: Optuna's own plotly visualisations, plus the eval-loss curves.

Optuna's ``plot_intermediate_values`` would show the curves against eval *points*; trials of
different lengths evaluate at different steps, so the curves here are drawn from each trial's
``eval_losses`` user attribute (``[[step, loss], ...]``) against the training step.

A study of one metric gets its optimization history, parameter importances and slices; a
multi-objective study gets its Pareto front, the importances for every metric, and a history and
slices per metric (``history-LABEL``, ``slices-LABEL``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from sweep.results.report.study_data import StudyData


@dataclass
class Chart:
    """One chart of the report: a plotly figure, or a note saying why it could not be drawn."""

    key: str  # also the stem of its PNG file
    title: str
    caption: str
    figure: object | None = None
    note: str | None = None
    kind: str = ""  # eval_curves, history, importances, slices or pareto_front (default: the key)
    target: int | None = None  # which metric a chart of a multi-objective study shows

    def __post_init__(self) -> None:
        self.kind = self.kind or self.key


def target_of(data: StudyData, target: int | None) -> dict:
    """Optuna's ``target``/``target_name`` arguments for metric ``target`` (None: the study's one metric)."""
    if target is None:
        return {"target_name": data.objectives.titles[0]}
    return {"target": lambda trial: trial.values[target], "target_name": data.objectives.titles[target]}


def build_charts(data: StudyData, optuna_study) -> list[Chart]:
    """The report's charts, in the order they appear."""
    from optuna import visualization as vis

    searched = data.searched_params()
    problem = data.importance_problem()
    objectives = data.objectives
    targets = list(range(len(objectives.names))) if objectives.multi else [None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks some plots experimental
        charts = [Chart("eval_curves", "Eval loss during training",
                        "Each trial's eval loss at its evaluation steps; the best trial"
                        + (("s (the Pareto front) are" if objectives.multi else " is") + " drawn thicker."),
                        figure=eval_curves_figure(data))]
        if objectives.multi:
            charts.append(Chart("pareto_front", "Trade-off between the objectives",
                                f"Every complete trial's {' and '.join(objectives.titles)}; the front is the "
                                "trials no other trial beats on every metric.",
                                figure=vis.plot_pareto_front(optuna_study, target_names=objectives.titles)))
        for target in targets:
            title = objectives.titles[target or 0]
            charts.append(Chart(_key("history", data, target), f"Optimization history: {title}" if objectives.multi
                                else "Optimization history", f"{title[0].upper() + title[1:]} of each complete trial"
                                + ("." if objectives.multi else ", and the best so far."), kind="history",
                                target=target, figure=vis.plot_optimization_history(optuna_study,
                                                                                    **target_of(data, target))))
        charts.append(Chart("importances", "Parameter importances",
                            f"How much of the variation in {' and in '.join(objectives.titles)} each searched "
                            f"parameter explains (Optuna's default evaluator, over {len(data.complete)} complete "
                            "trials: with few trials, a rough hint).",
                            figure=None if problem else vis.plot_param_importances(
                                optuna_study, params=data.varying_params(),
                                **({} if objectives.multi else target_of(data, None))),
                            note=problem))
        for target in targets:
            title = objectives.titles[target or 0]
            charts.append(Chart(_key("slices", data, target), f"{title[0].upper() + title[1:]} against each "
                                "hyperparameter", f"Every complete trial's {title} against the value of each searched "
                                "parameter.", kind="slices", target=target,
                                figure=vis.plot_slice(optuna_study, params=searched, **target_of(data, target))
                                if searched else None,
                                note=None if searched else "no parameter was searched: every trial used the same values"))
    return charts


def _key(kind: str, data: StudyData, target: int | None) -> str:
    return kind if target is None else f"{kind}-{data.objectives.labels[target]}"


def eval_curves_figure(data: StudyData):
    """Eval loss against training step, one line per trial that reported an evaluation."""
    import plotly.graph_objects as go

    figure = go.Figure()
    for trial, steps, losses in data.curves():
        best = data.on_front(trial)
        figure.add_trace(go.Scatter(
            x=steps, y=losses, mode="lines+markers", name=curve_label(trial, best, data.objectives.multi),
            line={"width": 4 if best else 1.5}, marker={"size": 8 if best else 5},
        ))
    figure.update_layout(xaxis_title="training step", yaxis_title="eval loss", legend_title="trial",
                         margin={"l": 60, "r": 20, "t": 30, "b": 50})
    return figure


def curve_label(trial, best: bool, multi: bool = False) -> str:
    """``#3 COMPLETE (best)`` style legend entry (``(front)`` in a multi-objective study)."""
    return f"#{trial.number} {trial.state.name}" + ((" (front)" if multi else " (best)") if best else "")
