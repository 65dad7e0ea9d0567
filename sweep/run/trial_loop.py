"""The worker loop: run trials on several threads until the study has ``n_trials`` finished trials.

Used instead of ``study.optimize`` so that the study's total is met exactly, however many workers
share it: each thread, inside the :class:`~sweep.study.study_gate.StudyGate`,

1. fails stale trials (their worker died) and queues them again (:mod:`sweep.study.retries`);
2. counts finished (COMPLETE, PRUNED) and RUNNING trials of the whole study;
3. stops when enough have finished; waits when the running ones would reach the total;
   stops starting trials once the study's time budget (:mod:`sweep.study.time_budget`) is used up;
4. otherwise asks Optuna for the next trial (a queued retry first) and records its first heartbeat.

Then it runs the objective outside the gate and tells Optuna the outcome. A heartbeat thread
beats for every trial this worker runs, so other workers can tell when this one has died.
"""

from __future__ import annotations

import threading

import optuna
from optuna.trial import TrialState

from sweep.errors import UserError
from sweep.run.trial_outcome import Interrupted, TrialFailed
from sweep.study.optuna_internals import storage_of, trial_id
from sweep.study.retries import fail_stale_trials, requeue
from sweep.study.time_budget import NoTimeBudget
from sweep.study.trial_attrs import FAIL_REASON

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
WAIT_SECONDS = 1.0  # how often an idle thread looks again for a trial to run


class TrialLoop:
    """Runs ``objective`` on ``threads`` threads; see the module docstring."""

    def __init__(self, optuna_study: optuna.Study, objective, gate, *, n_trials: int, threads: int,
                 heartbeat_seconds: int, stale_after_seconds: int, max_retries: int,
                 max_consecutive_failures: int, budget=None) -> None:
        self.study = optuna_study
        self.objective = objective
        self.gate = gate
        self.n_trials, self.threads = n_trials, threads
        self.heartbeat_seconds, self.stale_after_seconds = heartbeat_seconds, stale_after_seconds
        self.max_retries, self.max_failures = max_retries, max_consecutive_failures
        self.budget = budget or NoTimeBudget()
        self.out_of_time = False  # the time budget is used up: no new trials, running ones finish
        self.stopping = objective.stopping  # Ctrl-C/SIGTERM: running trainers are stopped too
        self.draining = threading.Event()  # too many failures, or an error: running trials may finish
        self.failures_in_a_row = 0
        self.tripped = False
        self.error: BaseException | None = None
        self._running: set[int] = set()
        self._lock = threading.Lock()
        self._done = threading.Event()

    def run(self) -> None:
        """Run until done or stopped; re-raises a UserError or a bug from a worker thread."""
        workers = [threading.Thread(target=self._work, name=f"trial-worker-{i}") for i in range(self.threads)]
        beat = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        self.budget.record()
        beat.start()
        for worker in workers:
            worker.start()
        for worker in workers:
            while worker.is_alive():  # short joins: the main thread must stay free for signal handlers
                worker.join(0.2)
        self._done.set()
        self.budget.record()
        if self.error is not None:
            raise self.error

    def _work(self) -> None:
        while not (self.stopping.is_set() or self.draining.is_set()):
            try:
                trial = self._next_trial()
            except BaseException as error:  # a storage failure: stop the run and report it
                self._stop_with(error)
                return
            if trial is None:
                if self.out_of_time or self._finished() >= self.n_trials:
                    return
                self.stopping.wait(WAIT_SECONDS)
                continue
            self._run(trial)

    def _next_trial(self) -> optuna.Trial | None:
        with self.gate:
            for number, queued in fail_stale_trials(self.study, self.stale_after_seconds, self.max_retries):
                again = "queued again, to resume from its checkpoint" if queued else "no retries left"
                print(f"trial {number} FAIL (stale: no heartbeat from its worker for over "
                      f"{self.stale_after_seconds} s; {again})", flush=True)
            # one read for both counts: a trial told COMPLETE between two reads would be in neither,
            # and one trial too many would be asked for
            counted = self.study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
            finished = sum(t.state in FINISHED for t in counted)
            running = len(counted) - finished
            if self.stopping.is_set() or self.draining.is_set() or finished + running >= self.n_trials:
                return None
            if self.out_of_time or self.budget.spent():
                if not self.out_of_time:
                    self.out_of_time = True
                    print(f"{self.budget.describe()}: no new trials; running ones finish", flush=True)
                return None
            trial = self.study.ask()
            storage_of(self.study).record_heartbeat(trial_id(trial))
        with self._lock:
            self._running.add(trial_id(trial))
        return trial

    def _run(self, trial: optuna.Trial) -> None:
        try:
            value = self.objective(trial)
        except optuna.TrialPruned:
            self._tell(trial, TrialState.PRUNED)
        except TrialFailed:
            self._tell(trial, TrialState.FAIL)
            self._count_failure()
        except Interrupted:
            self._tell(trial, TrialState.FAIL)
            requeue(self.study, storage_of(self.study).get_trial(trial_id(trial)), self.max_retries)
        except BaseException as error:  # UserError (bad input) or a bug: fail the trial, stop, report
            if not isinstance(error, UserError):
                storage_of(self.study).set_trial_user_attr(trial_id(trial), FAIL_REASON,
                                                           f"crash: orchestrator: {type(error).__name__}: {error}")
            self._tell(trial, TrialState.FAIL)
            self._stop_with(error)
        else:
            self._tell(trial, TrialState.COMPLETE, value)
        finally:
            with self._lock:
                self._running.discard(trial_id(trial))

    def _tell(self, trial: optuna.Trial, state: TrialState, value: float | None = None) -> None:
        # skip_if_finished: another worker may have failed it as stale (this one looked dead for a while)
        self.study.tell(trial, value, state=state, skip_if_finished=True)
        if state != TrialState.FAIL:
            with self._lock:
                self.failures_in_a_row = 0

    def _count_failure(self) -> None:
        with self._lock:
            self.failures_in_a_row += 1
            if self.failures_in_a_row >= self.max_failures:
                self.tripped = True
                self.draining.set()

    def _stop_with(self, error: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = error
        self.draining.set()

    def _finished(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=FINISHED))

    def _beat(self) -> None:
        while not self._done.wait(self.heartbeat_seconds):
            try:
                self.budget.record()
            except Exception:  # storage briefly unreachable: the next beat tries again
                pass
            with self._lock:
                running = list(self._running)
            for running_id in running:
                try:
                    storage_of(self.study).record_heartbeat(running_id)
                except Exception:  # storage briefly unreachable: the next beat tries again
                    pass
