"""The ``loop`` group's attention: a member beside longer rows gets its lone run's logits and gradients bit for bit.

Stacked with a member whose rows are 83 tokens long, a member's 56-token rows are padded to 83; on the CPU the
backward of softmax sums a row in blocks set by its length, so without attending segment by segment the short
member's query and key gradients differ in the last bit (and a sweep carried that to 0.1 in eval loss).
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from tests.sweep.live_study import TINY_MODEL
from tests.trainer.group.test_multi_lora import batch, grouped
from trainer.group.multi_lora import Segment
from trainer.group.segment_attention import attending_by_segment

CONFIGS = [(8, 16, False), (16, 8, True)]


@pytest.fixture(scope="module")
def base():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(TINY_MODEL, attn_implementation="eager").eval()


def logits_and_grads(model, layers, ids, mask, segments, slot):
    with attending_by_segment(model.config, segments):
        logits = model(input_ids=ids, attention_mask=mask).logits
    s = next(s for s in segments if s.slot == slot)
    mine = logits[s.start:s.stop, :s.length]
    (mine * mask[s.start:s.stop, :s.length, None]).square().sum().backward()
    grads = [p.grad.clone() for layer in layers.values() for p in layer.adapters[str(slot)].parameters()]
    return mine.detach(), grads


def test_a_member_beside_longer_rows_attends_and_trains_as_alone(base):
    short, long = batch(4, 56, seed=1), batch(5, 83, seed=2)
    model, routing, layers = grouped(base, CONFIGS)
    model.train()
    alone = [Segment(0, 0, 4, 56)]
    with routing.route(alone):
        theirs, their_grads = logits_and_grads(model, layers, *short, alone, 0)
    model, routing, layers = grouped(base, CONFIGS)
    model.train()
    ids = torch.cat([F.pad(short[0], (0, 27), value=5), long[0]])
    mask = torch.cat([F.pad(short[1], (0, 27)), long[1]])
    together = [Segment(0, 0, 4, 56), Segment(1, 4, 9, 83)]
    with routing.route(together):
        ours, our_grads = logits_and_grads(model, layers, ids, mask, together, 0)
    assert torch.equal(ours, theirs)
    assert all(torch.equal(a, b) for a, b in zip(our_grads, their_grads, strict=True))
