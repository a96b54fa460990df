"""The op cases checked under Dawn: the shared parity table of :mod:`energetic_wgpu.parity_cases`
(re-exported here; ``energetic-wgpu check`` runs the same cases on each wgpu adapter)."""

from __future__ import annotations

from ..parity_cases import BATCHES, CASES, D, DEGREES, TOP_K, Case, degree_graph

__all__ = ["Case", "CASES", "TOP_K", "DEGREES", "D", "degree_graph", "BATCHES"]
