"""The live view: the study's bar with elapsed time and ETA, each running trial's loading phase, step and
train loss, and a line for each trial a Ctrl-C interrupted (in a real run)."""

from __future__ import annotations

import re
import signal

from rich.console import Console

from sweep.run.progress import ProgressView, clock
from tests.sweep.live_study import checkpoint_saved, start_sweep, wait_for, write_study


def shown(view: ProgressView) -> str:
    view.console.print(view.render())
    return view.console.export_text()


def test_the_view_shows_the_study_bar_loading_trials_and_their_loss():
    view = ProgressView("demo", 4, {"COMPLETE": 1}, 2.5, console=Console(record=True, width=160))
    view.trial_started(3, {"learning_rate": 0.0002, "r": 8})
    view.trial_started(4, {"learning_rate": 0.001, "r": 16})
    view.trial_phase(4, "imports")
    text = shown(view)
    assert re.search(r"demo .*1/4 trials elapsed \d+s ETA -", text), text
    assert re.search(r"^3 +starting\.\.\. \d+s +- +- +learning_rate=0.0002 r=8", text, re.M), text
    assert re.search(r"^4 +loading model\.\.\. \d+s", text, re.M), text

    view.trial_step(3, 0, 8)  # Setup: the trainer is built, its first step is under way
    view.trial_phase(3, "trainer")
    assert re.search(r"^3 +first step\.\.\. \d+s", shown(view), re.M)
    view.trial_step(3, 2, 8, loss=3.25)
    view.trial_step(4, 8, 8, loss=2.75)
    view.trial_phase(4, "trained")  # its last step done: its samples are being answered
    assert re.search(r"^4 +8/8 answering samples +2\.7500", shown(view), re.M)
    view.trial_finished(4, "PRUNED", None)
    text = shown(view)
    assert re.search(r"2/4 trials elapsed \d+s ETA \d+s", text), text  # one trial of this run: a pace
    assert re.search(r"^3 +2/8 +3\.2500 ", text, re.M), text
    assert "complete 1  pruned 1  failed 0  running 1  best eval_loss 2.5000" in text

    view.trial_interrupted(3)
    assert re.search(r"trial 3 INTERRUPTED at 2/8 after \d+s\n$", view.console.export_text()), view.console.export_text()
    assert not view.running


def test_a_trial_waiting_in_a_group_worker_says_so_until_it_joins():
    view = ProgressView("demo", 4, {}, None, console=Console(record=True, width=160))
    view.trial_started(5, {"r": 8}, waiting=True)  # handed to a group worker beyond its places
    assert re.search(r"^5 +waiting in the group\.\.\. \d+s", shown(view), re.M)
    view.trial_phase(5, "model")  # it joined: the base was loaded already
    assert re.search(r"^5 +reading data\.\.\. \d+s", shown(view), re.M)


def test_clock():
    assert [clock(s) for s in (0, 42.4, 187, 3723)] == ["0s", "42s", "3:07", "1:02:03"]


def test_ctrl_c_prints_a_line_for_each_interrupted_trial(tmp_path):
    study, runs = write_study(tmp_path, "ctrl-c-lines", 2), tmp_path / "runs"
    log = tmp_path / "sweep.log"
    sweep = start_sweep(study, runs, log=log, SWEEP_TEST_FAULT="hang@3:trial=0")
    wait_for(lambda: checkpoint_saved(runs / "ctrl-c-lines" / "trials" / "00000", 2), 240, "trial 0's checkpoint")
    sweep.send_signal(signal.SIGINT)
    assert sweep.wait(timeout=30) == 130
    text = log.read_text()
    assert re.search(r"^trial 0 INTERRUPTED at [123]/8 after \d+s$", text, re.M), text
