"""A group's own attention for the length of a block: registered with transformers, named in the model's config.

    with attending_with(config, "group_packed", packed_attention, state=layout, active=_active):
        decoder(...)          # every attention layer calls packed_attention; _active[-1] is the layout

Used by the packed stacked step (:mod:`trainer.group.packed_rows`) and the exact ``loop`` step
(:mod:`trainer.group.segment_attention`). A registered attention without a mask function of its own
gets no mask from transformers; ``mask`` registers one.
"""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def attending_with(config, name: str, function, state, active: list, mask=None):
    """Within it, ``config``'s model attends with ``function`` (registered once as ``name``, with ``mask`` as its
    mask function if given) and ``state`` is ``active[-1]``; the config's own attention afterwards."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    if name not in AttentionInterface._global_mapping:
        AttentionInterface.register(name, function)
        if mask is not None:
            AttentionMaskInterface.register(name, mask)
    before = config._attn_implementation
    config._attn_implementation = name
    active.append(state)
    try:
        yield
    finally:
        active.pop()
        config._attn_implementation = before
