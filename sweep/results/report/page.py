"""The report's HTML: one self-contained file (plotly.js inlined once, no network needed to view it)."""

from __future__ import annotations

import datetime as dt
import html
import json

from sweep.results.report.charts import Chart
from sweep.results.report.study_data import StudyData
from sweep.study import trial_attrs as attrs

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { border: 1px solid #ddd; padding: 4px 8px;
  text-align: left; vertical-align: top; } th { background: #f4f4f4; }
.samples td { white-space: pre-wrap; max-width: 28em; } .note { color: #865; font-style: italic; }
.muted { color: #777; } pre { background: #f8f8f8; padding: 0.8em; overflow-x: auto; }
"""
MEASURED = ((attrs.EVAL_LOSS, "eval loss after the last step"), (attrs.ADAPTER_STEP, "adapter from step"),
            (attrs.TRAIN_LOSS, "train loss"), (attrs.STEPS, "steps"), (attrs.TRAIN_SECONDS, "train seconds"),
            (attrs.TOKENS_PER_SECOND, "tokens/s"), (attrs.PEAK_MEMORY_MB, "peak memory (MB)"),
            (attrs.BACKEND, "backend"), (attrs.CHRF, "chrF of the sample answers"), (attrs.ADAPTER_PATH, "adapter"))


def render_page(data: StudyData, charts: list[Chart], config: dict | None, samples_of: int) -> str:
    """The whole report page as one HTML string."""
    from plotly.offline import get_plotlyjs

    best = _front(data) if data.objectives.multi else _best(data)
    sections = [_summary(data), best, *(_chart(c) for c in charts), _samples(data, samples_of),
                _trials(data), _config(config)]
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(data.name)}: sweep report</title><style>{STYLE}</style>"
            f"<script type=\"text/javascript\">{get_plotlyjs()}</script></head>\n<body>\n"
            + "\n".join(sections) + "\n</body></html>\n")


def _e(value) -> str:
    return html.escape(str(value))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _rows(pairs) -> str:
    return "".join(f"<tr><th>{_e(k)}</th><td>{_e(_fmt(v))}</td></tr>" for k, v in pairs)


def _summary(data: StudyData) -> str:
    states: dict[str, int] = {}
    for trial in data.trials:
        states[trial.state.name] = states.get(trial.state.name, 0) + 1
    counts = ", ".join(f"{n} {state.lower()}" for state, n in sorted(states.items()))
    generated = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (f"<h1>Study {_e(data.name)}</h1><p>{_e(data.description)}</p>"
            f"<p>Objective: {_e(data.objectives.describe())}.</p>"
            f"<p class=\"muted\">{len(data.trials)} trials: {_e(counts)}. Report generated {_e(generated)}; "
            "PNG versions of the charts lie beside this file.</p>"
            + (f"<p><b>{_e(data.base[0].upper() + data.base[1:])}</b>, measured as every trial is.</p>" if data.base else ""))


def _best(data: StudyData) -> str:
    best = data.best
    recorded = best.user_attrs
    searched = [(name, value) for name, value in sorted(best.params.items())]
    derived = [(name, recorded[name]) for name in (attrs.LORA_ALPHA, attrs.USE_RSLORA)
               if name in recorded and name not in best.params]
    measured = [(label, recorded[key]) for key, label in MEASURED if recorded.get(key) is not None]
    return (f"<h2>Best configuration</h2><p>Trial <b>#{best.number}</b>, {_e(data.objectives.titles[0])} "
            f"<b>{best.value:.4f}</b> (best of {len(data.complete)} complete trials).</p>"
            f"<table><tr><th colspan=2>searched parameters</th></tr>{_rows(searched)}"
            f"<tr><th colspan=2>LoRA scaling</th></tr>{_rows(derived)}"
            f"<tr><th colspan=2>measured</th></tr>{_rows(measured)}</table>")


def _front(data: StudyData) -> str:
    """A multi-objective study's Pareto front: each trial with its values, parameters and adapter."""
    titles = data.objectives.titles
    head = "".join(f"<th>{_e(t)}</th>" for t in titles)
    rows = []
    for trial in data.front:
        values = "".join(f"<td>{v:.4f}</td>" for v in trial.values)
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(trial.params.items()))
        rows.append(f"<tr><td>#{trial.number}</td>{values}<td>{_e(params)}</td>"
                    f"<td>{_e(trial.user_attrs.get(attrs.ADAPTER_PATH, ''))}</td></tr>")
    return (f"<h2>Pareto front</h2><p>{len(data.front)} of {len(data.complete)} complete trials: none of them is "
            f"beaten on every metric ({_e(data.objectives.describe())}) by another trial.</p>"
            f"<table><tr><th>trial</th>{head}<th>parameters</th><th>adapter</th></tr>{''.join(rows)}</table>")


def _chart(chart: Chart) -> str:
    head = f"<h2>{_e(chart.title)}</h2><p class=\"muted\">{_e(chart.caption)}</p>"
    if chart.figure is None:
        return head + f"<p class=\"note\">{_e(chart.note)}</p>"
    body = chart.figure.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False},
                                div_id=f"chart-{chart.key}")
    return head + body


def _samples(data: StudyData, how_many: int) -> str:
    trials = data.best_samples(how_many)
    head = "<h2>Sample generations of the best trials</h2>" if not data.objectives.multi else \
        "<h2>Sample generations of the Pareto front</h2>"
    if not trials:
        return head + ("<p class=\"note\">no complete trial stored sample generations "
                       "(set <code>samples.count</code> in the study file)</p>")
    columns = "".join(f"<th>#{t.number} ({_e(_scores(data, t))})</th>" for t in trials)
    rows = []
    for i, first in enumerate(trials[0].user_attrs[attrs.SAMPLES]):
        answers = []
        for trial in trials:
            samples = trial.user_attrs[attrs.SAMPLES]
            answers.append(f"<td>{_e(samples[i]['answer'])}</td>" if i < len(samples) else "<td></td>")
        rows.append(f"<tr><td>{_e(first['prompt'])}</td><td>{_e(first['reference'])}</td>{''.join(answers)}</tr>")
    return (head + "<p class=\"muted\">The same eval prompts answered by each trial's adapter, best trial first.</p>"
            f"<table class=\"samples\"><tr><th>prompt</th><th>reference</th>{columns}</tr>{''.join(rows)}</table>")


def _trials(data: StudyData) -> str:
    rows = []
    for trial in data.trials:
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(trial.params.items()))
        values = "".join(f"<td>{v:.4f}</td>" for v in trial.values) if trial.values else \
            "<td>-</td>" * len(data.objectives.names)
        reason = trial.user_attrs.get(attrs.FAIL_REASON, "")
        mark = " *" if data.objectives.multi and data.on_front(trial) else ""
        rows.append(f"<tr><td>{trial.number}{mark}</td><td>{trial.state.name}</td>{values}"
                    f"<td>{_e(params)}</td><td>{_e(reason)}</td></tr>")
    heads = "".join(f"<th>{_e(t)}</th>" for t in data.objectives.titles)
    note = "<p class=\"muted\">* on the Pareto front</p>" if data.objectives.multi else ""
    return (f"<h2>All trials</h2>{note}<table><tr><th>#</th><th>state</th>{heads}<th>parameters</th>"
            f"<th>fail reason</th></tr>{''.join(rows)}</table>")


def _scores(data: StudyData, trial) -> str:
    """``eval loss 2.5012`` or ``best eval loss 2.4011, GPU seconds 31.2000``."""
    return ", ".join(f"{t} {v:.4f}" for t, v in zip(data.objectives.titles, trial.values, strict=True))


def _config(config: dict | None) -> str:
    if not config:
        return ""
    return ("<h2>Study configuration</h2><details><summary>the resolved study file</summary>"
            f"<pre>{_e(json.dumps(config, indent=2))}</pre></details>")
