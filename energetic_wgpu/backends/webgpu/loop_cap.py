"""llvmpipe's loop cap, checked before the kernels whose per-invocation work grows with the input.

Mesa's llvmpipe (lavapipe's Vulkan adapter and the OpenGL adapter on the same rasterizer) ends
an invocation's loops after :data:`LOOP_CAP` iterations *in all* (nested and consecutive loops
count together) and carries on as if they had finished: a loop of 70,000 iterations returns
after 65,535, with no error. Real GPUs and Dawn have no such cap. Most kernels bound one
invocation's work by construction (thread bins for small degrees, strided workgroups for hubs,
16 elements per thread in reductions); three can still exceed the cap on large inputs (and
the thread bins on rows of more than about 10,000 columns):

* ``segment_bwd``'s workgroup per hub: about ``ceil(deg / 64) * (d + 3) + 10 d`` iterations per
  lane for a hub of ``deg`` entries and ``d`` columns (~230,000 entries at d = 16);
* ``edge_probs_hub``: about ``ceil(deg / 256) * (ceil(d / 4) + 16) + 2,200`` (~950,000 edges at
  d = 16);
* ``scatter_bwd_pi``: about ``2 ceil(B / 4) + 8`` for a batch of B rows (llvmpipe counts two per
  4 rows there: ~131,000 rows).

(llvmpipe counts a loop's final, failing condition check too.) On an llvmpipe adapter those ops
estimate their count with these formulas — conservative: measured against the inputs where the
results go wrong, tests/test_loop_cap.py — and raise :class:`DeviceLimitError` before any
dispatch instead of returning wrong numbers.
"""

from __future__ import annotations

from typing import Any

from ...errors import DeviceLimitError

__all__ = ["LOOP_CAP", "has_loop_cap", "check"]

#: the loop iterations llvmpipe lets one invocation run (in all)
LOOP_CAP = 65_535


def has_loop_cap(runtime: Any) -> bool:
    """Whether the runtime's adapter is llvmpipe (lavapipe or Mesa's OpenGL), cached."""
    cap = getattr(runtime, "_llvmpipe_loop_cap", None)
    if cap is None:
        info = runtime.adapter_info
        cap = "llvmpipe" in " ".join(str(info.get(k, "")) for k in ("device", "description", "vendor")).lower()
        runtime._llvmpipe_loop_cap = cap
    return bool(cap)


def check(backend: Any, iterations: int, what: str) -> None:
    """Raise DeviceLimitError when ``iterations`` (one invocation's loop iterations, estimated)
    exceed :data:`LOOP_CAP` on an llvmpipe adapter; ``what`` names the input that causes it."""
    if iterations > LOOP_CAP and has_loop_cap(backend.runtime):
        raise DeviceLimitError(
            f"{what} needs about {iterations:,} loop iterations in one shader invocation; this adapter "
            f"(llvmpipe) silently stops an invocation's loops after {LOOP_CAP:,}, so the result would be "
            "wrong. Use a hardware adapter or the NumPy backend for this input."
        )
