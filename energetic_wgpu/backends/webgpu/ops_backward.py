"""Backward ops of the wgpu backend (SPEC §4): gathers in a fixed order, no float atomics.

Each function takes the :class:`WgpuBackend` as its first argument and follows the
docstring of the matching method of :class:`energetic_wgpu.backends.base.Backend`.

Degree strategy (SMALL = ``kernels.SMALL_DEGREE_MAX``), as in the forward kernels: a node
whose segment (or reverse-index range) has at most SMALL entries is summed serially by one
thread; a larger one by one workgroup of 256 (strided compensated partials, fixed tree), so
one huge segment never serializes a launch. Every sum runs in one fixed order: results are
bit-identical from run to run.

* ``energy_scatter_backward``: grad_energies thread per (b, j) over j's CSR segment
  (workgroup per (b, j) for large segments); grad_pi thread per edge over b = 0..B-1 in order.
* ``segment_softmax_backward``: per segment dot = sum pi * gpi, then pi * (gpi - dot) / tau.
* ``edge_logits_backward``: grad_q thread per (j, c) over j's segment, grad_k thread per
  (n, c) over n's reverse-index range (workgroup per (node, c) for large ones); grad_bias is a
  copy (the vec4 copy kernel, so the step stays in one compute pass).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .kernels import SMALL_DEGREE_MAX, KernelSpec, kernel_sources, register

__all__ = ["energy_scatter_backward", "segment_softmax_backward", "edge_logits_backward"]

U, R, W = "uniform", "read", "read_write"


def _k(name: str, file: str, bindings: tuple[str | None, ...], wg: int) -> KernelSpec:
    return register(KernelSpec(name, kernel_sources(file), name, bindings, wg))


_k("scatter_bwd_small", "scatter_backward.wgsl", (U, R, R, R, R, R, R, W), 64)
_k("scatter_bwd_large", "scatter_backward.wgsl", (U, R, R, R, R, R, R, W, R), 256)
_k("scatter_bwd_pi", "scatter_backward.wgsl", (U, None, R, None, R, R, None, W, None, R, R), 64)
_k("softmax_bwd_small", "softmax_backward.wgsl", (U, R, R, R, W), 64)
_k("softmax_bwd_large", "softmax_backward.wgsl", (U, R, R, R, W, R), 256)
_k("logits_bwd_small", "logits_backward.wgsl", (U, R, R, R, R, W), 64)
_k("logits_bwd_large", "logits_backward.wgsl", (U, R, R, R, R, W, R), 256)


def energy_scatter_backward(
    backend: Any,
    graph: Any,
    energies: Any,
    pi: Any,
    grad_next: Any,
    alpha: float = 1.0,
    active: Any = None,
    retain_sinks: bool = False,
) -> tuple[Any, Any]:
    be, rt = backend, backend.runtime
    gd = be.graph_data(graph)
    energies, pi, grad_next = be._dev(energies), be._dev(pi), be._dev(grad_next)
    n, e = gd.num_nodes, gd.num_edges
    batch = 1 if grad_next.ndim == 1 else int(grad_next.shape[0])
    act = be._opt(active)
    flags = (1 if active is not None else 0) | (2 if retain_sinks else 0)
    grad_e = be.empty(grad_next.shape)
    grad_pi = be.empty((e,))
    u = (batch, n, flags, gd.n_large_out, np.float32(alpha), SMALL_DEGREE_MAX, e)
    common = [gd.row_ptr, gd.col_idx, pi, grad_next, act, gd.sink, grad_e]
    rt.dispatch("scatter_bwd_small", common, threads=batch * n, uniforms=u)
    if gd.n_large_out and batch:
        rt.dispatch("scatter_bwd_large", common + [gd.large_out], workgroups=gd.n_large_out * batch, uniforms=u)
    # B = 0: the kernel writes zeros (an empty sum) for every edge
    rt.dispatch("scatter_bwd_pi", [gd.col_idx, grad_next, act, grad_pi, gd.src, energies], threads=e, uniforms=u)
    return grad_e, grad_pi


def segment_softmax_backward(backend: Any, graph: Any, pi: Any, grad_pi: Any, tau: float = 1.0) -> Any:
    be, rt = backend, backend.runtime
    gd = be.graph_data(graph)
    pi, grad_pi = be._dev(pi), be._dev(grad_pi)
    out = be.empty((gd.num_edges,))
    u = (gd.num_nodes, gd.n_large_out, SMALL_DEGREE_MAX, 0, np.float32(tau))
    rt.dispatch("softmax_bwd_small", [gd.row_ptr, pi, grad_pi, out], threads=gd.num_nodes, uniforms=u)
    if gd.n_large_out:
        rt.dispatch(
            "softmax_bwd_large", [gd.row_ptr, pi, grad_pi, out, gd.large_out], workgroups=gd.n_large_out, uniforms=u
        )
    return out


def edge_logits_backward(backend: Any, graph: Any, q: Any, k: Any, grad_logits: Any) -> tuple[Any, Any, Any]:
    be, rt = backend, backend.runtime
    gd = be.graph_data(graph)
    q, k, gl = be._dev(q), be._dev(k), be._dev(grad_logits)
    n = gd.num_nodes
    dim = int(q.shape[1])
    grad_q = be.empty((n, dim))
    grad_k = be.empty((n, dim))
    jobs = (
        (0, gd.row_ptr, gd.col_idx, k, grad_q, gd.large_out, gd.n_large_out),
        (1, gd.rev_ptr, gd.rev_pairs, q, grad_k, gd.large_in, gd.n_large_in),
    )
    for mode, seg_ptr, idx, feat, out, large, n_large in jobs:
        u = (n, dim, mode, n_large, SMALL_DEGREE_MAX)
        rt.dispatch("logits_bwd_small", [seg_ptr, idx, gl, feat, out], threads=n * dim, uniforms=u)
        if n_large:
            rt.dispatch("logits_bwd_large", [seg_ptr, idx, gl, feat, out, large], workgroups=n_large * dim, uniforms=u)
    # a copy dispatch rather than copy_buffer: the step's dispatches stay in one compute pass
    # (a buffer copy ends the pass and costs a new one)
    grad_bias = be.empty((gd.num_edges,))
    n_vec = -(-gd.num_edges // 4)
    rt.dispatch("copy_vec4", [gl, grad_bias], threads=n_vec, uniforms=(gd.num_edges, n_vec))
    return grad_q, grad_k, grad_bias
