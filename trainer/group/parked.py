"""Finished members waiting for their sample answers, answered several at once.

A trial's samples (``samples.count`` eval prompts, up to ``max_new_tokens`` each) are generated a
token at a time: on a GPU each token is a forward of the whole model for a few rows, bound by kernel
launches, so one member's samples cost as much as several steps of the whole group. So a member
whose training ended is *parked*: its adapter is saved, copied out of the group (its slot takes the
next trial at once) and its result held back; then the samples of every parked member are generated
in one batch, member k's prompts in block k of the rows with member k's adapter::

    with parked_adapters(trainer.layers, parked, exact=True):
        model.generate(...)          # rows [prompts of member 0 | prompts of member 1 | ...]

``exact`` applies each block's adapter with PEFT's own operations on that block alone
(``lora_B(lora_A(x)) * scaling``), so each member's answers are the ones it gives by itself, bit for
bit on the CPU; otherwise two batched matmuls over ranks padded to the largest apply all blocks at
once, in the base's dtype (as the stacked matmul trains and evaluates under autocast: equal up to
rounding, as many kernels for K members as for one, and no casts between a 16-bit base and float32).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from trainer.events import Result
from trainer.group.stacked_lora import blocks_update
from trainer.samples import answer, sample_prompts

KV_BYTES = 8 << 30  # the keys and values one generate call may hold (prompts of several members)
MOST_SAMPLE_ROWS = 2048  # rows of one generate call at most


@dataclass
class Parked:
    """A member whose training ended: its folder, result (all but the samples) and adapter, at its own rank."""

    folder: object  # trainer.group.run_group.TrialFolder
    result: Result
    weights: dict[str, tuple[torch.Tensor, torch.Tensor]]  # {layer name: (lora_A, lora_B)}
    scaling: float
    samples: list[dict[str, str]] | None = None
    error: BaseException | None = field(default=None, repr=False)

    @property
    def spec(self):
        return self.folder.spec

    def together_key(self) -> tuple | None:
        """Members with the same key answer the same prompts the same way: one batch; None answers alone
        (sampled answers draw from one random stream, which a batch would share out differently)."""
        s = self.spec
        if s.samples.temperature != 0:
            return None
        return (s.samples.model_dump_json(), s.data.model_dump_json(), s.training.per_device_eval_batch_size)


class LayerBlocks:
    """One layer's adapters of the parked members, block k of the rows for member k."""

    def __init__(self, pairs: list[tuple[torch.Tensor, torch.Tensor] | None], scalings: list[float], exact: bool,
                 in_features: int, out_features: int, dtype: torch.dtype, device: torch.device) -> None:
        self.pairs, self.scalings, self.exact, self.count, self.dtype = pairs, scalings, exact, len(pairs), dtype
        if not exact:  # [K, r, in] and [K, out, r] at the largest rank, B already scaled (as LayerStack.forward)
            rank = max((a.shape[0] for a, _ in filter(None, pairs)), default=1)
            self.a = torch.zeros(self.count, rank, in_features, dtype=dtype, device=device)
            self.b = torch.zeros(self.count, out_features, rank, dtype=dtype, device=device)
            for k, pair in enumerate(pairs):
                if pair is not None:
                    a, b = pair
                    self.a[k, :a.shape[0]] = a
                    self.b[k, :, :a.shape[0]] = b * scalings[k]

    def forward(self, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        if x.shape[0] % self.count:
            raise ValueError(f"{x.shape[0]} rows are not {self.count} equal blocks, one per parked member")
        if not self.exact:
            return blocks_update(x, result, self.a, self.b)
        deltas, autocast = [], torch.is_autocast_enabled(x.device.type)
        for xk, pair, scaling in zip(x.chunk(self.count), self.pairs, self.scalings, strict=True):
            if pair is None:  # a layer this member does not adapt: its rows get the base alone
                deltas.append(result.new_zeros(*xk.shape[:-1], result.shape[-1], dtype=self.dtype))
                continue
            a, b = pair
            deltas.append(F.linear(F.linear(xk if autocast else xk.to(a.dtype), a), b) * scaling)  # as PEFT
        return (result + torch.cat(deltas)).to(result.dtype)


@contextmanager
def parked_adapters(layers: dict, parked: list[Parked], exact: bool):
    """Within the block, every adapted layer of ``layers`` (``{name: MultiLoraLinear}``) applies member k's
    adapter to block k of its rows."""
    scalings = [p.scaling for p in parked]
    for name, layer in layers.items():
        weight = layer.base_layer.weight
        pairs = [p.weights.get(name) for p in parked]
        # exact: in the adapters' dtype, as PEFT; batched: in the base's, as the stacked matmul trains under autocast
        dtype = next((a.dtype for a, _ in filter(None, pairs)), torch.float32) if exact else weight.dtype
        layer.blocks = LayerBlocks(pairs, scalings, exact, layer.in_features, layer.out_features, dtype, weight.device)
    try:
        yield
    finally:
        for layer in layers.values():
            layer.blocks = None


def answer_parked(parked: list[Parked], model, layers: dict, tokenizer, rows_of, exact: bool) -> int:
    """Generate every parked member's samples (into ``Parked.samples``, or ``Parked.error``), members that answer
    the same prompts the same way in one batch; ``rows_of(spec)`` gives a spec's ``(eval_rows, fmt)``.
    Returns the number of generate batches run."""
    batches, together = 0, {}
    for p in parked:
        eval_rows, fmt = rows_of(p.spec)
        if not p.spec.samples.count or fmt == "text":
            p.samples = []
            continue
        key = p.together_key()
        together.setdefault(key if key is not None else id(p), []).append(p)
    model.eval()
    for members in together.values():
        spec = members[0].spec
        try:
            prompts, samples = sample_prompts(spec, tokenizer, *rows_of(spec))
        except Exception as error:  # the rows or the template: these members' own failure
            for p in members:
                p.error = error
            continue
        size = spec.training.per_device_eval_batch_size
        longest = max(len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts)
        rows = sample_rows(model.config, longest + spec.samples.max_new_tokens)
        per_call = max(1, rows // min(size, len(prompts)))
        for first in range(0, len(members), per_call):
            part = members[first:first + per_call]
            try:
                answers = [[] for _ in part]
                with parked_adapters(layers, part, exact):
                    for start in range(0, len(prompts), size):
                        block = prompts[start:start + size]
                        out = answer(spec, model, tokenizer, block * len(part))  # member-major rows
                        batches += 1
                        for k in range(len(part)):
                            answers[k] += out[k * len(block):(k + 1) * len(block)]
            except Exception as error:  # the batch failed: each member alone, so one member's failure is its own
                if len(part) == 1:
                    part[0].error = error
                for alone in part if len(part) > 1 else ():
                    batches += answer_parked([alone], model, layers, tokenizer, rows_of, exact)
                continue
            for p, mine in zip(part, answers, strict=True):
                p.samples = [{**sample, "answer": a} for sample, a in zip(samples, mine, strict=True)]
    return batches


def sample_rows(config, tokens: int) -> int:
    """Rows of one generate call whose keys and values (16-bit, every layer) of ``tokens`` a row fit ``KV_BYTES``:
    a small model answers many members' prompts in one call (each call costs its decode steps, whatever its rows),
    a large one fewer; at most ``MOST_SAMPLE_ROWS``."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    per_token = 2 * text.num_hidden_layers * heads * head_dim * 2
    return max(1, min(MOST_SAMPLE_ROWS, KV_BYTES // (per_token * max(1, tokens))))
