"""The stacked matmul on the real tiny model: each trial of a stacked group ends as it ends alone, up to rounding,
whoever joins, leaves, stops or fails beside it; its checkpoints resume; its adapter loads in PEFT; its padding
stays zero; and a step dispatches as many kernels for eight trials as for one.

Tolerances. The reference is each trial alone through the ``loop`` group (bit-identical to the TRL trial).
A stacked group computes the same sums in another order (batched matmuls over zero-padded ranks, one
cross-entropy over the stack, one norm per slot, AdamW's second moment as a lerp), so in float32 each step
differs from the lone run's by a few ulps, and Adam's normalised update carries a relative gradient
difference of ~1e-7 into a weight difference of that order of ``lr`` a step. After the 8 to 24 steps here
the weights differ by at most ~4e-5 of their largest magnitude and the eval losses by ~2e-7 relative
(measured); the tests allow 1e-3 and 1e-5, far below what any real difference (a skipped step, a wrong
learning rate, bias correction or clipping, a neighbour's gradient) gives: ~1e-1 and ~1e-2.
"""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
from safetensors.torch import load_file

from tests.sweep.live_study import TINY_MODEL, run_module
from tests.trainer.group.rounding import assert_close_to_scale
from tests.trainer.group.trial_events import events
from trainer.group.run_group import run_group
from trainer.spec import TrialSpec
from trainer.trial_folder import STOP_FILE

# r, alpha, rsLoRA, learning rate, epochs, and what else differs
TRIALS = {
    0: (4, 16, False, 2e-2, 1, {}),
    1: (16, 8, True, 5e-3, 2, {"lr_scheduler_type": "cosine", "gradient_accumulation_steps": 2}),
    2: (8, 32, False, 1e-2, 3, {"warmup_ratio": 0.1, "weight_decay": 0.01, "per_device_train_batch_size": 6,
                                "max_grad_norm": 0.5}),
}
WEIGHTS_TOLERANCE = 1e-3  # of the largest magnitude of each weight
LOSS_TOLERANCE = 1e-5  # relative


def spec_for(data, folder, number: int, trial: int | None = None, **lora) -> TrialSpec:
    r, alpha, rslora, lr, epochs, training = TRIALS[number if trial is None else trial]
    return TrialSpec.model_validate({
        "study": "stacked", "trial_number": number, "output_dir": str(folder), "backend": "grouped",
        "model": {"name_or_path": str(TINY_MODEL), "max_seq_length": 256, "load_in_4bit": False,
                  "chat_template": "llama-3", "dtype": "float32"},
        "data": {"train": str(data / "train.jsonl"), "eval": str(data / "eval.jsonl")},
        "lora": {"r": r, "lora_alpha": alpha, "use_rslora": rslora, **lora},
        "training": {"learning_rate": lr, "num_train_epochs": epochs, "per_device_train_batch_size": 8,
                     "per_device_eval_batch_size": 8, "warmup_steps": 2, "optim": "adamw_torch", "weight_decay": 0.0,
                     "eval_points": 4, "seed": 3407, **training},
        "samples": {"count": 1, "max_new_tokens": 4},
    })


def adapter(folder) -> dict[str, torch.Tensor]:
    return load_file(folder / "adapter" / "adapter_model.safetensors")


def assert_close_trial(folder, reference) -> None:
    """Same adapter keys and shapes, weights and eval/train curves within the tolerances above."""
    ours, theirs = adapter(folder), adapter(reference)
    assert sorted(ours) == sorted(theirs)
    for key, weight in theirs.items():
        assert_close_to_scale(ours[key], weight, rel=WEIGHTS_TOLERANCE)
    for kind, field in (("eval", "eval_loss"), ("progress", "loss")):
        mine, alone = events(folder, kind), events(reference, kind)
        assert [e["step"] for e in mine] == [e["step"] for e in alone]
        assert [e[field] for e in mine] == pytest.approx([e[field] for e in alone], rel=LOSS_TOLERANCE)
    assert [e["learning_rate"] for e in events(folder, "progress")] == \
        [e["learning_rate"] for e in events(reference, "progress")]


@pytest.fixture(scope="module")
def alone(data, tmp_path_factory):
    """Each trial trained by itself through the loop group (the TRL trial, bit for bit): the reference."""
    root = tmp_path_factory.mktemp("alone")
    for number in TRIALS:
        [result] = run_group([spec_for(data, root / str(number), number)])
        assert result.status == "ok", result.reason
    return root


def test_a_stacked_group_trains_each_trial_as_alone(data, alone, tmp_path):
    specs = [spec_for(data, tmp_path / str(n), n) for n in TRIALS]
    results = run_group(specs, max_live=2, matmul="stacked")  # trial 2 joins trial 0's emptied slot
    assert [r.status for r in results] == ["ok", "ok", "ok"], [r.reason for r in results]
    for number in TRIALS:
        assert_close_trial(tmp_path / str(number), alone / str(number))
    [setup] = events(tmp_path / "2", "setup")
    assert "matmul=stacked" in setup["notes"] and "slot=0" in setup["notes"] and "group=2" in setup["notes"]


def test_stopped_failed_and_refused_members_leave_the_others_as_alone(data, alone, tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEP_TEST_FAULT", "crash@3:trial=5")
    specs = [spec_for(data, tmp_path / "0", 0), spec_for(data, tmp_path / "5", 5, trial=1),
             spec_for(data, tmp_path / "6", 6, trial=1), spec_for(data, tmp_path / "7", 7, trial=0, lora_dropout=0.1),
             spec_for(data, tmp_path / "2", 2)]
    (tmp_path / "6").mkdir()
    (tmp_path / "6" / STOP_FILE).touch()
    ok, failed, stopped, refused, last = run_group(specs, max_live=3, matmul="stacked")
    assert failed.status == "error" and "injected crash" in failed.reason
    assert (stopped.status, stopped.steps) == ("stopped", 1)
    assert refused.status == "bad_input" and refused.reason.startswith("lora.lora_dropout 0.1: the stacked matmul")
    assert (ok.status, last.status) == ("ok", "ok")
    assert_close_trial(tmp_path / "0", alone / "0")
    assert_close_trial(tmp_path / "2", alone / "2")  # in a slot a stopped or failed trial emptied


def test_the_stacked_adapter_loads_in_peft_and_gives_the_reported_eval_loss(data, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.group.batches import eval_batches
    from trainer.trial_data import encode, load_rows

    specs = [spec_for(data, tmp_path / str(n), n) for n in (0, 1)]
    assert [r.status for r in run_group(specs, matmul="stacked")] == ["ok", "ok"]
    folder = tmp_path / "0"  # r 4 beside r 16: its padding sliced off
    base = AutoModelForCausalLM.from_pretrained(TINY_MODEL, attn_implementation="eager")
    model = PeftModel.from_pretrained(base, str(folder / "adapter")).eval()
    assert model.peft_config["default"].r == 4
    tokenizer = AutoTokenizer.from_pretrained(folder / "adapter")
    spec = TrialSpec.read(folder / "adapter" / "trial_spec.json")
    _, evaluation = encode(spec, tokenizer, *load_rows(spec))
    total = rows = 0
    with torch.no_grad():
        for ids, mask, labels in eval_batches(evaluation.to_list(), 8, tokenizer.pad_token_id):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            total, rows = total + loss.item() * len(ids), rows + len(ids)
    assert total / rows == pytest.approx(events(folder, "result")[0]["eval_loss"], rel=1e-6)


@pytest.mark.parametrize("first", ["stacked", "loop"])
def test_a_killed_stacked_group_resumes_each_trial_from_its_checkpoint(data, tmp_path, first):
    """Killed at trial 0's step 7 and run again stacked, each trial goes on from its newest checkpoint (trial 0's
    at step 6, trial 1's, with two micro-batches a step, at step 2) and ends as the uninterrupted stacked group
    ends it, up to rounding (resumed, trial 0's batches meet other batches of trial 1, so the stack's padded
    length, and the order of the sums over it, differ); a loop group's checkpoints resume in a stacked group."""
    paths = []
    for number in (0, 1):
        spec = spec_for(data, tmp_path / str(number), number)
        spec.out.mkdir()
        spec.write(tmp_path / f"{number}.json")
        paths.append(str(tmp_path / f"{number}.json"))

    def group(matmul: str, fault: str = "") -> subprocess.CompletedProcess:
        return run_module("trainer.group", "--matmul", matmul, *paths, SWEEP_TEST_FAULT=fault)

    killed = group(first, "kill@7:trial=0")
    assert killed.returncode == -9, killed.stdout + killed.stderr
    done = group("stacked")
    assert done.returncode == 0, done.stdout + done.stderr
    uninterrupted = [spec_for(data, tmp_path / "whole" / str(n), n) for n in (0, 1)]
    assert [r.status for r in run_group(uninterrupted, matmul="stacked")] == ["ok", "ok"]
    for number, step in ((0, 6), (1, 2)):
        folder, whole = tmp_path / str(number), tmp_path / "whole" / str(number)
        assert events(folder, "setup")[1]["resumed_from_step"] == step
        ours, theirs = adapter(folder), adapter(whole)
        for key, weight in theirs.items():
            assert_close_to_scale(ours[key], weight, rel=WEIGHTS_TOLERANCE)
        [result], [expected] = events(folder, "result"), events(whole, "result")
        assert result["eval_loss"] == pytest.approx(expected["eval_loss"], rel=LOSS_TOLERANCE)


def _group(specs, max_live):
    """The specs through one stacked group; the group (its ledger) after every trial ended."""
    from trainer.group.run_group import TrialFolder, open_group

    group = open_group(specs[0], sorted({t for s in specs for t in s.lora.target_modules}), "stacked",
                       max_live=max_live)
    for spec in specs:
        group.offer(TrialFolder(spec))
    while group.busy:
        group.advance()
    return group


def test_held_evaluations_are_each_trial_s_own_at_its_eval_points(data, tmp_path, monkeypatch):
    """With eight places a stacked group holds its members' adapters at their eval points and evaluates two at
    a time: the same eval steps and losses as evaluating each at once, the same adapters bit for bit (holding
    leaves training alone), and a member that fails with an evaluation held fails alone, that evaluation recorded."""
    monkeypatch.setenv("SWEEP_TEST_FAULT", "crash@5:trial=5")  # trial 5 (trial 1's settings) has step 4 held
    runs = {}
    for name, max_live in (("at_once", None), ("held", 8)):
        specs = [spec_for(data, tmp_path / name / str(n), n, trial=n if n < 5 else 1) for n in (0, 1, 2, 5)]
        group = _group(specs, max_live)
        assert [(s.out.name, group.hold_at_most) for s in specs][0] == ("0", 1 if max_live is None else 2)
        runs[name] = group.ledger.counts
    assert runs["at_once"]["evaluations"] == runs["held"]["evaluations"] == 3 * 4 + 2
    assert runs["held"]["evaluation_batches"] < runs["at_once"]["evaluation_batches"]
    for number in (0, 1, 2):
        held, at_once = tmp_path / "held" / str(number), tmp_path / "at_once" / str(number)
        ours, theirs = adapter(held), adapter(at_once)
        assert all(torch.equal(ours[key], weight) for key, weight in theirs.items())
        mine, theirs = events(held, "eval"), events(at_once, "eval")
        assert [e["step"] for e in mine] == [e["step"] for e in theirs]
        assert [e["eval_loss"] for e in mine] == pytest.approx([e["eval_loss"] for e in theirs], rel=1e-6)
        # the train losses read later when held, each reported once, at its step, before its step's evaluation
        assert events(held, "progress") == events(at_once, "progress")
        order = [(e["event"], e["step"]) for e in map(json.loads, (held / "events.jsonl").read_text().splitlines())
                 if e["event"] in ("progress", "eval")]
        assert all(order.index(("progress", step)) < order.index(("eval", step)) for kind, step in order
                   if kind == "eval" and ("progress", step) in order)
    [failed] = events(tmp_path / "held" / "5", "result")
    assert failed["status"] == "error" and "injected crash" in failed["reason"]
    assert [e["step"] for e in events(tmp_path / "held" / "5", "eval")] == [2, 4]  # its held one recorded as it fails


def test_a_killed_group_with_held_evaluations_resumes_where_its_checkpoints_say(data, tmp_path):
    """Killed with evaluations held, each trial resumes from a checkpoint whose evaluations reach its own step
    (a checkpoint is written once its eval point's loss is), and ends as the uninterrupted group ends it."""
    paths = []
    for number in (0, 1, 2):
        spec = spec_for(data, tmp_path / str(number), number)
        spec.out.mkdir()
        spec.write(tmp_path / f"{number}.json")
        paths.append(str(tmp_path / f"{number}.json"))

    def group(fault: str = "") -> subprocess.CompletedProcess:
        return run_module("trainer.group", "--matmul", "stacked", "--max-live", "8", *paths, SWEEP_TEST_FAULT=fault)

    killed = group("kill@7:trial=0")
    assert killed.returncode == -9, killed.stdout + killed.stderr
    done = group()
    assert done.returncode == 0, done.stdout + done.stderr
    whole = _group([spec_for(data, tmp_path / "whole" / str(n), n) for n in (0, 1, 2)], 8)
    assert whole.hold_at_most == 2
    resumed = []
    for number in (0, 1, 2):
        folder = tmp_path / str(number)
        step = events(folder, "setup")[1]["resumed_from_step"]
        restored = [e["step"] for e in events(folder, "eval") if e.get("restored")]
        assert step == 0 or restored[-1] == step, (number, step, restored)
        resumed.append(step)
        ours, theirs = adapter(folder), adapter(tmp_path / "whole" / str(number))
        for key, weight in theirs.items():
            assert_close_to_scale(ours[key], weight, rel=WEIGHTS_TOLERANCE)
        [result], [expected] = events(folder, "result"), events(tmp_path / "whole" / str(number), "result")
        assert result["eval_loss"] == pytest.approx(expected["eval_loss"], rel=LOSS_TOLERANCE)
        # the mean train loss counts the steps before the resume too: the checkpoint holds its losses up to its step
        assert result["train_loss"] == pytest.approx(expected["train_loss"], rel=LOSS_TOLERANCE)
    assert any(resumed), resumed
