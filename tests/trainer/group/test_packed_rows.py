"""Packed stacked steps: each member's rows end to end, attention still row by row, forward and backward the same
as the rows padded (the tiny real model, float32 on the CPU)."""

from __future__ import annotations

import pytest
import torch

from tests.sweep.live_study import TINY_MODEL
from trainer.group.packed_rows import attending_packed, pack

PAD = 5


def right_padded(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), PAD)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)], mask[i, :len(row)] = torch.tensor(row), 1
    return ids, mask


def test_each_member_s_rows_lie_end_to_end_with_positions_starting_again_at_every_row():
    first, second = right_padded([[11, 12, 13], [21], [31, 32]]), right_padded([[41, 42, 43, 44], [51, 52]])
    packed = pack([first, second], PAD, multiple=4)

    assert packed.ids.tolist() == [[11, 12, 13, 21, 31, 32, PAD, PAD], [41, 42, 43, 44, 51, 52, PAD, PAD]]
    assert packed.positions.tolist() == [[0, 1, 2, 0, 0, 1, 0, 0], [0, 1, 2, 3, 0, 1, 0, 0]]
    assert [s.tolist() for s in packed.starts] == [[0, 3, 4], [0, 4]]
    layout = packed.layout
    assert (layout.rows, layout.longest) == (5, 4)
    tokens, places = packed.ids.numel(), layout.rows * layout.longest
    grid = layout.grid.view(layout.rows, layout.longest)
    # row by row, right-padded: the third row of the first member is tokens 4 and 5, then zeros (index `tokens`)
    assert grid[2].tolist() == [4, 5, tokens, tokens]
    assert grid[3].tolist() == [8, 9, 10, 11]
    flat = torch.cat([packed.ids.view(-1), torch.tensor([0])])
    assert flat[layout.grid].view(5, 4).tolist() == [[11, 12, 13, 0], [21, 0, 0, 0], [31, 32, 0, 0],
                                                     [41, 42, 43, 44], [51, 52, 0, 0]]
    # back is grid's inverse on the real tokens; the packs' end padding has no place
    real = layout.grid < tokens
    assert torch.equal(layout.back[layout.grid[real]], torch.arange(places)[real])
    assert layout.back[[6, 7, 14, 15]].tolist() == [places] * 4


@pytest.fixture(scope="module")
def model():
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(TINY_MODEL, dtype=torch.float32, attn_implementation="sdpa")
    model.requires_grad_(False)
    return model


def test_the_packed_decoder_gives_every_real_token_its_padded_row_s_hidden_state_and_gradient(model):
    generator = torch.Generator().manual_seed(1)
    members = [[torch.randint(6, 100, (n,), generator=generator).tolist() for n in lengths]
               for lengths in ([7, 3, 12], [12, 1], [5, 5, 5, 2])]
    weight = model.model.layers[0].self_attn.k_proj.weight  # a weight before the attention: its gradient crosses it
    weight.requires_grad_(True)

    def hidden_and_gradient(run):
        weight.grad = None
        states = run()  # each member's rows' hidden states at their real tokens, row by row
        torch.manual_seed(2)
        sum((s * torch.randn_like(s)).sum() for s in states).backward()
        return torch.cat(states), weight.grad.clone()

    def padded():
        ids, mask = right_padded([row for rows in members for row in rows])
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
        return [hidden[i, :len(row)] for i, row in enumerate(r for rows in members for r in rows)]

    def packed():
        step = pack([right_padded(rows) for rows in members], PAD, multiple=8)
        with attending_packed(model.config, step.layout):
            hidden = model.model(input_ids=step.ids, position_ids=step.positions).last_hidden_state
            return [hidden[k, start:start + len(row)]
                    for k, rows in enumerate(members) for start, row in zip(step.starts[k].tolist(), rows, strict=True)]

    try:
        expected, expected_grad = hidden_and_gradient(padded)
        ours, our_grad = hidden_and_gradient(packed)
    finally:
        weight.requires_grad_(False)
    assert model.config._attn_implementation == "sdpa"  # given back after the packed step
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(our_grad, expected_grad, rtol=1e-4, atol=1e-5)
    assert expected_grad.abs().max() > 1e-3  # the gradient is not trivially zero
