"""The stacked group's steps as CUDA graphs train each member as eager steps do, while members leave and join.

On the CPU the graph path runs eagerly with the same padding (pack length and attention rows to multiples,
label entries to a multiple, empty slots filled with blocks that have no label) and the same choice of
which steps it takes; on a GPU (run through ``device``) its steps are also captured and replayed."""

from __future__ import annotations

import threading

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.sweep.live_study import TINY_MODEL
from tests.trainer.group.rounding import assert_close_to_scale
from tests.trainer.group.test_stacked_lora import ALL, PAD, join, steps
from trainer.group.group_trainer import new_group_trainer
from trainer.group.stacked_trainer import StackedGroupTrainer
from trainer.group.step_graphs import LABEL_MULTIPLE, LENGTH_MULTIPLE

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def trained(tmp_path, device: str, cuda_graphs: bool):
    """Eight places: 8 members for 3 steps, one leaves (7 of 8) for 3, another leaves (6 of 8) for 2, two join
    (8 of 8, one of a larger rank: the stack grows) for 3. The trainer and every member's weights, slot by slot."""
    tmp_path.mkdir()
    model = AutoModelForCausalLM.from_pretrained(TINY_MODEL, attn_implementation="sdpa").to(device)
    trainer = new_group_trainer(model, PAD, ALL, "stacked", cuda_graphs=cuda_graphs)
    trainer.reserve(8)
    for number in range(8):
        join(trainer, tmp_path, number, {"r": 4 if number % 2 else 8, "batch": 2 + number % 3, "seed": number})
    steps(trainer, 3)
    for slot in (3, 5):
        trainer.remove(next(m for m in trainer.members if m.slot == slot))
        steps(trainer, 3 if slot == 3 else 2)
    join(trainer, tmp_path, 8, {"r": 8, "batch": 2, "seed": 8})
    join(trainer, tmp_path, 9, {"r": 16, "batch": 3, "seed": 9})
    steps(trainer, 3)
    members = sorted(trainer.members, key=lambda m: m.slot)
    return trainer, [w.clone() for m in members for pair in trainer.adapter_weights(m).values() for w in pair]


@pytest.mark.parametrize("device", DEVICES)
def test_graphed_steps_train_each_member_as_eager_steps_while_members_leave_and_join(tmp_path, device):
    graphed, ours = trained(tmp_path / "graphed", device, True)
    eager, theirs = trained(tmp_path / "eager", device, False)
    graphs = graphed.graphs
    # 3 steps of 8, 3 of 7 (the empty slot padded), none of 6 (eager, the graphs given back), 3 of 8 again
    assert graphs.steps == 9 and eager.graphs is None
    assert all(n % LABEL_MULTIPLE == 0 and length % LENGTH_MULTIPLE == 0
               for _, _, length, n, *_ in graphs.shapes)
    assert len(graphs.shapes) < graphs.steps  # steps share shapes
    assert graphed.stack.steps == eager.stack.steps
    for a, b in zip(ours, theirs, strict=True):
        assert_close_to_scale(a, b, rel=1e-3)
    if device == "cuda":
        assert graphs.failed is None, graphs.failed
        assert graphs.captures >= 2 and graphs.replays >= 6  # captured again after the stack grew


def _during_capture(monkeypatch, work) -> None:
    """Every step's ``work()`` while its graph is being captured."""
    original = StackedGroupTrainer._forward_backward

    def forward_backward(self, *args):
        if torch.cuda.is_current_stream_capturing():
            work()
        return original(self, *args)

    monkeypatch.setattr(StackedGroupTrainer, "_forward_backward", forward_backward)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="captures need a GPU")
def test_a_capture_survives_the_checkpoint_threads_wait_on_its_copies(tmp_path, monkeypatch):
    # the checkpoint writer waits for a slot's copies (slot_copy: an event's synchronize) on a thread of its own,
    # whenever the step may be capturing: in the default capture mode that invalidated the capture (H200 sweep)
    side, event, errors = torch.cuda.Stream(), torch.cuda.Event(), []
    with torch.cuda.stream(side):
        event.record()

    def wait_on_copies():
        try:
            event.synchronize()
        except Exception as error:  # noqa: BLE001 - what the writer's thread would have met
            errors.append(error)

    def checkpoint_thread():
        thread = threading.Thread(target=wait_on_copies)
        thread.start()
        thread.join()

    _during_capture(monkeypatch, checkpoint_thread)
    graphed, ours = trained(tmp_path / "graphed", "cuda", True)
    assert not errors and graphed.graphs.failed is None, (errors, graphed.graphs.failed)
    assert graphed.graphs.captures >= 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="captures need a GPU")
def test_a_failed_capture_leaves_the_group_training_eagerly_as_before(tmp_path, monkeypatch):
    def fail():
        raise RuntimeError("out of memory in the capture")

    _during_capture(monkeypatch, fail)
    graphed, ours = trained(tmp_path / "graphed", "cuda", True)
    eager, theirs = trained(tmp_path / "eager", "cuda", False)
    assert graphed.graphs.failed.startswith("capture failed: RuntimeError") and graphed.graphs.captures == 0
    assert not graphed.graphs.graphs and graphed.graphs.pool is None  # its memory given back
    for a, b in zip(ours, theirs, strict=True):  # the failed step itself ran eagerly: nothing lost
        assert_close_to_scale(a, b, rel=1e-3)
