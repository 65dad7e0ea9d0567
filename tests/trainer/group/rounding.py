"""Agreement to rounding, judged on the scale of the numbers compared.

Float32 sums of many terms (matmuls, the backward's reductions) differ in their last bits with the
order of the additions, which the kernels choose by the CPU they run on (AVX2 and AVX-512 builds of
the same matmul round differently). Such a difference is a small fraction of the largest number of
the tensor, not of each element (an element near zero after cancellation carries the rounding of its
large terms); a wrong row, adapter or scaling differs by a sizeable fraction of it.
"""

from __future__ import annotations

import torch


def assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor, rel: float) -> None:
    """Every element of ``actual`` within ``rel`` times the largest magnitude in ``expected`` of its counterpart."""
    torch.testing.assert_close(actual, expected, rtol=0, atol=rel * expected.abs().max().item())
