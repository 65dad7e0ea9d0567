"""A grid study runs every point of its grid, however often it is stopped, resumed or retried.

Optuna's grid sampler gives each trial the index of a point (``grid_id``) and proposes the indices
no trial holds yet. Two things break that under resumes: a point whose index is held by a trial
that ran another point (studies recorded before the grid's seed was kept the same in every run:
the first real grid, ``bench/data/smollm2_grid.jsonl``, ran 4 points twice and 4 never), and a
study total that counts repeats. So, when a grid study starts, :func:`fill_grid_gaps`

* queues every point that no trial has run or holds and whose index is taken, so the sampler
  would never propose it (a queued retry counts as holding its point);
* returns how many finished trials the study needs: those it has, plus one for each point still
  wanted (``n_trials`` counts grid points, at most the grid's size; repeats and duplicates of a
  point cover nothing new).
"""

from __future__ import annotations

import optuna

from sweep.run.trial_loop import FINISHED
from sweep.study.optuna_internals import enqueued_params, grid_id, grid_points


def fill_grid_gaps(optuna_study: optuna.Study, sampler, n_trials: int) -> tuple[int, list[dict]]:
    """Queue the points the grid sampler cannot reach; returns (the study's trial total, the points queued).

    Call inside the study gate (:class:`sweep.study.study_gate.StudyGate`), so two workers do not queue a point twice.
    """
    points = grid_points(sampler)
    trials = optuna_study.get_trials(deepcopy=False)
    held = {_key(enqueued_params(t) or t.params) for t in trials}
    taken = {grid_id(t) for t in trials} - {None}
    gaps = [point for index, point in enumerate(points) if index in taken and _key(point) not in held]
    for point in gaps:
        optuna_study.enqueue_trial(point, skip_if_exists=True)
    finished = [t for t in trials if t.state in FINISHED]
    covered = {_key(t.params) for t in finished} & {_key(p) for p in points}
    return len(finished) + max(0, min(n_trials, len(points)) - len(covered)), gaps


def _key(params: dict) -> tuple:
    return tuple(sorted(params.items()))
