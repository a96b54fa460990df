"""The op-case table (energetic_wgpu/parity_cases.py) under pytest: every case on NumPy and on
every wgpu adapter, through the one parity harness (tests/parity.py). The same table drives
``energetic-wgpu check`` and ``energetic-wgpu check --dawn`` (tests/test_dawn.py)."""

from __future__ import annotations

import pytest
from parity import numpy_and_wgpu

from energetic_wgpu.parity_cases import CASES


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@numpy_and_wgpu()
def test_case(backend, case):
    return case.run(backend, case.make(0))


def test_the_table_covers_every_op():
    names = " ".join(c.name for c in CASES)
    for op in ("edge_logits", "edge_probs", "segment_softmax", "segment_topk", "energy_scatter", "edge_flow", "step_metrics",
               "energy_scatter_backward", "segment_softmax_backward", "edge_logits_backward", "mse",
               "cross_entropy", "entropy_regularization", "adamw_step", "add", "sum_squares", "router"):
        assert op in names, op
