"""The whole op-case table (energetic_wgpu/parity_cases.py) again, each case under the
tightest binding and buffer limits it runs under (``backend.binding_limit`` and
``buffer_limit``, from 256 bytes up), so every split the wgpu backend has is exercised on every
op: the packed parameters and AdamW moments past one binding, the reverse index as two [E]
arrays, the batch in chunks and [B, N] arrays over several buffers. Each case's outputs must
be bit-identical to its run on the device's own limits (which tests/test_parity_cases.py holds
to NumPy). What sets a case's limit is the largest array that must fit one binding (an [E]
array, a [N, d] parameter, one reduction workgroup of 16 KiB for the losses).
"""

from __future__ import annotations

import pytest
from parity import to_host

from energetic_wgpu.errors import DeviceLimitError
from energetic_wgpu.parity_cases import CASES

#: limits tried, smallest first (bytes; multiples of 256)
LADDER = [256 * k for k in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)]


def _tightest(be, case):
    """(limit, outputs on the host) of the case under the smallest limit of LADDER it runs under."""
    for limit in LADDER:
        try:
            with be.binding_limit(limit), be.buffer_limit(limit):
                return limit, to_host(be, case.run(be, case.make(0)))
        except DeviceLimitError:
            continue
    pytest.fail(f"{case.name}: refused under every limit up to {LADDER[-1]} bytes")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_split_bit_identical(gpu_backend, case):
    be = gpu_backend
    whole = to_host(be, case.run(be, case.make(0)))
    limit, split = _tightest(be, case)
    inputs = case.make(0)
    edges = inputs["graph"].num_edges
    # every case split something: its limit is below the [E, 2] reverse pairs (8 E bytes) or
    # below its [B, N] energies
    assert limit < max(8 * edges, inputs["energies"].size * 4 if "energies" in inputs else 0), (limit, edges)
    assert set(split) == set(whole)
    for name, ref in whole.items():
        assert split[name].tobytes() == ref.tobytes(), f"{case.name}: {name} differs under a {limit}-byte limit"


def test_the_batch_cases_run_in_chunks_over_split_buffers(gpu_backend):
    """The B = 512 cases (B * N * 4 = 24,576 bytes) run under a 16 KiB limit: 2 chunks of the
    batch, and their [B, N] arrays in 2 buffers."""
    from energetic_wgpu.backends.webgpu import batch_chunks

    be = gpu_backend
    for case in (c for c in CASES if c.name.endswith("_b512")):
        limit, _ = _tightest(be, case)
        assert limit == 16384, (case.name, limit)
        with be.binding_limit(limit), be.buffer_limit(limit):
            assert len(batch_chunks.plan(be, 512, 12)) == 2
            assert be.asarray(case.make(0)["energies"]).is_split
