"""The stack itself on the real tiny model: zero padding stays zero, an emptied slot is clean for the next trial,
a member's optimizer state is torch's AdamW state, bucketed lengths and gradient checkpointing change nothing but
rounding, and a step dispatches as many kernels for eight trials as for one."""

from __future__ import annotations

import random
import time

import pytest
import torch
from transformers import AutoModelForCausalLM, get_scheduler

from bench.group_ops import count_ops, options
from tests.sweep.live_study import TINY_MODEL
from trainer.events import EventWriter
from trainer.group.batches import TrainOrder
from trainer.group.group_trainer import new_group_trainer
from trainer.group.member import log_progress
from trainer.group.multi_lora import peft_init
from trainer.group.stacked_adamw import step_slots
from trainer.spec import TrialSpec

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PAD = 0
LR = 1e-2  # the members' learning rate unless a test gives its own


def rows(n: int = 48, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    found = []
    for _ in range(n):
        ids = [rng.randrange(8, 500) for _ in range(rng.randint(10, 30))]
        found.append({"input_ids": ids, "labels": [-100] * 4 + ids[4:]})
    return found


def group(tmp_path, trials: list[dict], **options):
    """A stacked group on the tiny model with one member per ``{r, targets, lr, weight_decay, batch, seed}``."""
    model = AutoModelForCausalLM.from_pretrained(TINY_MODEL, attn_implementation="eager")
    trainer = new_group_trainer(model, PAD, ALL, "stacked", **options)
    for i, t in enumerate(trials):
        join(trainer, tmp_path, i, t)
    return trainer


def join(trainer, tmp_path, number: int, t: dict):
    spec = TrialSpec.model_validate({
        "study": "stack", "trial_number": number, "output_dir": str(tmp_path / str(number)),
        "model": {"name_or_path": str(TINY_MODEL)}, "data": {"train": "-", "eval": "-"},
        "lora": {"r": t["r"], "lora_alpha": 2 * t["r"], "target_modules": t.get("targets", ALL)},
        "training": {"learning_rate": t.get("lr", LR), "weight_decay": t.get("weight_decay", 0.1),
                     "per_device_train_batch_size": t.get("batch", 4), "seed": t.get("seed", 3407),
                     "optim": "adamw_torch", "num_train_epochs": 100},
    })
    order = TrainOrder(rows(), spec.training.per_device_train_batch_size, 1, 100, None, spec.training.seed, PAD)
    member = trainer.add(spec, order, [], EventWriter(tmp_path / f"events-{number}.jsonl"), time.time())
    member.start_at(0)
    return member


def steps(trainer, n: int) -> None:
    for _ in range(n):
        for member, batch, loss in trainer.train_step():
            member.after_backward(batch, loss)
        log_progress(trainer.members)


def test_rank_padding_and_layers_a_member_does_not_adapt_stay_zero_under_adamw_with_weight_decay(tmp_path):
    trainer = group(tmp_path, [{"r": 4, "batch": 3}, {"r": 16}, {"r": 8, "targets": ["q_proj", "v_proj"]}])
    steps(trainer, 6)
    stack = trainer.stack
    assert (stack.capacity, stack.rank) == (3, 16)
    for flat in stack.buffers:
        for name, (a, b) in zip(stack.layers, stack.views(flat), strict=True):
            assert not a[0, 4:].any() and not b[0, :, 4:].any()
            assert not a[2, 8:].any() and not b[2, :, 8:].any()
            if not name.endswith(("q_proj", "v_proj")):
                assert not a[2].any() and not b[2].any()
    for name, (a, b) in trainer.adapter_weights(trainer.members[0]).items():
        assert a.shape == (4, stack.layers[name].in_features) and b.abs().sum() > 0  # trained: B left zero
    assert sorted(trainer.adapter_weights(trainer.members[2])) == [n for n in stack.layers
                                                                   if n.endswith(("q_proj", "v_proj"))]


def test_a_member_that_leaves_empties_its_slot_and_the_next_starts_from_peft_init(tmp_path):
    trainer = group(tmp_path, [{"r": 8}, {"r": 8, "seed": 5}])
    steps(trainer, 3)
    leaving = trainer.members[0]
    trainer.remove(leaving)
    stack = trainer.stack
    assert all(not flat[0].any() for flat in stack.buffers) and stack.steps[0] == 0 and stack.scale[0] == 0
    newcomer = join(trainer, tmp_path, 2, {"r": 4, "seed": 11})
    assert newcomer.slot == 0
    drawn = peft_init(stack.layers, 4, seed=11)
    for (a, b), (a0, b0) in zip(trainer.adapter_weights(newcomer).values(), drawn, strict=True):
        assert torch.equal(a, a0) and torch.equal(b, b0)
    assert newcomer.optimizer.state_dict()["state"] == {}
    steps(trainer, 1)
    assert stack.steps[:2] == [1, 4]


def test_a_reserved_stack_is_made_once_for_the_members_that_join(tmp_path):
    """A group that knows how many train at once makes its stack that large before they join, instead of a new
    copy of the whole stack one slot larger at each join; members then train in their slots as before."""
    trainer = group(tmp_path, [{"r": 8}])
    trainer.reserve(4)
    made = trainer.stack.weights
    for number in (1, 2, 3):
        join(trainer, tmp_path, number, {"r": 8, "seed": number})
    assert trainer.stack.weights is made and trainer.stack.capacity == 4
    steps(trainer, 2)
    assert trainer.stack.steps == [2, 2, 2, 2] and all(made[slot].any() for slot in range(4))


def test_a_members_optimizer_state_is_torch_adamw_state(tmp_path):
    trainer = group(tmp_path, [{"r": 4}, {"r": 8}])
    steps(trainer, 2)
    member = trainer.members[0]
    saved = member.optimizer.state_dict()
    params = [p.detach().clone().requires_grad_() for pair in trainer.adapter_weights(member).values() for p in pair]
    torch_adamw = torch.optim.AdamW(params, lr=LR, weight_decay=0.1)
    get_scheduler("linear", torch_adamw, num_warmup_steps=0, num_training_steps=10)  # as a loop member's
    for p in params:
        p.grad = torch.ones_like(p)
    torch_adamw.step()
    theirs = torch_adamw.state_dict()
    assert saved["param_groups"][0].keys() == theirs["param_groups"][0].keys()
    assert saved["state"][0].keys() == theirs["state"][0].keys() and saved["state"][0]["step"] == 2
    assert [s["exp_avg"].shape for s in saved["state"].values()] == [p.shape for p in params]
    torch_adamw.load_state_dict(saved)  # a loop group's member reads it as its own
    member.optimizer.load_state_dict(torch_adamw.state_dict())
    again = member.optimizer.state_dict()
    assert all(torch.equal(again["state"][i]["exp_avg_sq"], s["exp_avg_sq"]) for i, s in saved["state"].items())


def test_a_slot_copy_is_the_members_weights_and_optimizer_state_as_they_were(tmp_path):
    """A checkpoint's copy of a slot (taken without waiting for the GPU) holds the member's adapter and AdamW state
    at the moment it was taken, at the member's own rank, whatever the stack does after."""
    from trainer.group.slot_copy import SlotCopy

    trainer = group(tmp_path, [{"r": 4, "targets": ["q_proj", "v_proj"]}, {"r": 8}])
    steps(trainer, 2)
    member = trainer.members[0]
    weights = {name: (a.clone(), b.clone()) for name, (a, b) in trainer.adapter_weights(member).items()}
    state = member.optimizer.state_dict()
    copied = SlotCopy(trainer.stack, member.slot, member.optimizer.param_groups[0])
    steps(trainer, 1)
    join(trainer, tmp_path, 2, {"r": 16})  # the stack grows its rank
    mine = copied.weights()
    assert list(mine) == list(weights)
    assert all(torch.equal(mine[n][0], a) and torch.equal(mine[n][1], b) for n, (a, b) in weights.items())
    theirs = copied.optimizer_state()
    assert theirs["param_groups"] == state["param_groups"]
    assert theirs["state"].keys() == state["state"].keys()
    for i, entry in state["state"].items():
        assert all(torch.equal(theirs["state"][i][key], value) for key, value in entry.items())


def weights_after(tmp_path, n: int, **options) -> list[torch.Tensor]:
    tmp_path.mkdir()
    trainer = group(tmp_path, [{"r": 4, "batch": 3}, {"r": 8}], **options)
    steps(trainer, n)
    return [w.clone() for m in trainer.members for pair in trainer.adapter_weights(m).values() for w in pair]


@pytest.mark.parametrize("option", [{"length_multiple": 16}, {"activation_checkpointing": True}, {"loss_chunk": 7}])
def test_bucketed_lengths_checkpointing_and_a_chunked_loss_train_the_same_to_rounding(tmp_path, option):
    plain = weights_after(tmp_path / "plain", 4)
    changed = weights_after(tmp_path / "changed", 4, **option)
    # AdamW moves a weight by about the learning rate a step whatever its gradient's size, so where a gradient
    # is near zero its rounding shows in the weight: within 1% of one step (3e-5 seen on an AVX-512 CPU)
    for ours, theirs in zip(changed, plain, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-2 * LR)


def test_bucketed_lengths_are_multiples(tmp_path):
    trainer = group(tmp_path, [{"r": 4}], length_multiple=16, packed=False)
    batch = trainer.members[0].next_batch()
    inputs = trainer._inputs([(batch.input_ids, batch.attention_mask, batch.labels)], [batch.items])
    (ids, mask), layout = inputs.ids, inputs.on_device(*inputs.host)[2]
    assert ids.shape == (4, 32) and batch.length < 32 and torch.equal(ids[:, :batch.length], batch.input_ids)
    assert not mask[:, batch.length:].any() and layout is None

    trainer.packed = True  # each member's rows end to end, the pack's length a multiple too
    inputs = trainer._inputs([(batch.input_ids, batch.attention_mask, batch.labels)], [batch.items])
    ids, layout = inputs.ids[0], inputs.on_device(*inputs.host)[2]
    assert ids.shape == (1, -(-batch.tokens // 16) * 16) and layout.rows == 4
    assert torch.equal(ids[0, :batch.tokens], batch.input_ids[batch.attention_mask.bool()])


def test_a_stacked_step_dispatches_as_many_kernels_for_eight_trials_as_for_one_but_four_a_member():
    args = options(["--steps", "1", "--warmup", "1"])
    ks = (1, 2, 4, 8)
    stacked = [count_ops(args, k, "stacked")["kernels_per_step"] for k in ks]
    # the forward and backward do not grow with K (the CPU's attention picks its kernels by shape: a few more or
    # fewer); the work number by number is a slot's own rank: copy, fold, zero and AdamW, four kernels a member
    assert all(abs(n - stacked[0]) <= 0.05 * stacked[0] + 4 * (k - 1) for k, n in zip(ks, stacked, strict=True)), stacked
    loop = [count_ops(args, k, "loop")["kernels_per_step"] for k in (1, 2)]
    assert loop[1] > 1.5 * loop[0] and stacked[0] < loop[0]


def test_the_layers_compute_with_the_weights_b_scaled_and_their_gradients_reach_the_float_ones(tmp_path):
    """The stack's compute copy (what every adapted layer multiplies by) is each slot's A and its B times the
    slot's LoRA scaling, made from the weights the optimizer stepped; its gradients are folded into the float
    gradients with the chain rule through the scaling, then zeroed."""
    trainer = group(tmp_path, [{"r": 4}, {"r": 8, "targets": ["q_proj", "v_proj"]}])
    steps(trainer, 2)
    stack = trainer.stack
    stack.refresh()
    for (a, b), (ca, cb) in zip(stack.views(stack.weights), stack.views(stack.compute), strict=True):
        assert torch.equal(ca, a) and torch.equal(cb, b * stack.scale[:, None, None])
    stack.grads.zero_()
    for slot in stack.occupied:  # a backward's gradients: the padding beyond a slot's own rank gets none
        stack.numbers(stack.compute_grads, slot).normal_()
    given = stack.compute_grads.clone()
    stack.fold_gradients()
    for (ga, gb), (ca, cb) in zip(stack.views(stack.grads), stack.views(given), strict=True):
        assert torch.equal(ga, ca) and torch.equal(gb, cb * stack.scale[:, None, None])
    assert not stack.compute_grads.any()


def test_a_slots_optimizer_step_is_torch_clipping_and_adamw_at_its_own_rank(tmp_path):
    """step_slots over each due slot's own numbers is clip_grad_norm_ then torch's AdamW on the member's own
    parameters (to float32 rounding), whatever the stack's largest rank; a slot that is not due and every
    slot's padding stay as they were."""
    trainer = group(tmp_path, [{"r": 4, "lr": 3e-2, "weight_decay": 0.0}, {"r": 16, "weight_decay": 0.3},
                               {"r": 8}])
    steps(trainer, 2)
    stack, (small, large, waiting) = trainer.stack, trainer.members
    generator = torch.Generator().manual_seed(5)
    for member, spread in ((small, 1e-3), (large, 1.0), (waiting, 1.0)):  # small's gradient is inside the clip norm
        numbers = stack.numbers(stack.grads, member.slot)
        numbers.copy_(torch.randn(numbers.shape, generator=generator) * spread)
    before = {flat: flat.clone() for flat in stack.buffers}
    expected = {}
    for member in (small, large):
        params = [p.detach().clone().requires_grad_() for pair in trainer.adapter_weights(member).values()
                  for p in pair]
        grads = [g.clone() for pair in stack.slot_views(stack.grads, member.slot).values() for g in pair]
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        adamw = torch.optim.AdamW(params, lr=1.0)
        adamw.load_state_dict(member.optimizer.state_dict())  # its moments, step count and param group
        norm = torch.nn.utils.clip_grad_norm_(params, member.spec.training.max_grad_norm)
        adamw.step()
        expected[member.slot] = (params, adamw.state_dict(), norm)
    assert expected[small.slot][2] < 1.0 < expected[large.slot][2]  # clipped for one only

    step_slots(stack, [(m.slot, m.optimizer.param_groups[0], m.spec.training.max_grad_norm) for m in (small, large)])

    for member in (small, large):
        params, state, _ = expected[member.slot]
        ours = [p for pair in trainer.adapter_weights(member).values() for p in pair]
        for mine, theirs in zip(ours, params, strict=True):
            torch.testing.assert_close(mine, theirs.detach(), rtol=1e-5, atol=1e-7)
        saved = member.optimizer.state_dict()
        assert saved["state"][0]["step"] == state["state"][0]["step"] == 3
        for i, entry in state["state"].items():
            for key in ("exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(saved["state"][i][key], entry[key], rtol=1e-5,
                                           atol=1e-5 * entry[key].abs().max().item())  # float32 rounding
        assert not stack.numbers(stack.grads, member.slot).any()  # zeroed for the next step
    for flat, was in before.items():
        assert torch.equal(stack.numbers(flat, waiting.slot), stack.numbers(was, waiting.slot))
        for slot in stack.occupied:  # the padding beyond each slot's own rank
            assert not flat[slot, stack.ranks[slot] * stack.unit:].any()
