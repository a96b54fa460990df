"""The device copies of a graph's index arrays (uploaded once per graph by the backend)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import DeviceLimitError
from ...graph import Graph
from . import edge_windows, reverse_index
from .arrays import DeviceArray
from .edge_windows import EdgeWindow
from .kernels import BIN_WG, GROUP_DEGREE_MAX, SMALL_DEGREE_MAX, THREAD_DEGREE_MAX

__all__ = ["GraphData", "DegreeBins", "degree_bins", "SegmentBins", "binned_segments", "needs_windows",
           "upload_graph"]

#: segment_bwd_serial's invocations: one per node up to this many nodes ...
SERIAL_THREADS = 1 << 18
#: ... then at most this many nodes per invocation
SERIAL_NODES_PER_THREAD = 64
#: segments per workgroup of the forward's thread bin and 32-lane-group bin (edge_probs.wgsl)
_THREADS_PER_WG = 64
_GROUPS_PER_WG = 2


@dataclass(frozen=True)
class DegreeBins:
    """The forward's degree bins of one graph (edge_probs.wgsl): ``nodes`` (int64) lists the
    nodes of out-degree 1..THREAD_DEGREE_MAX (``n_small``), then THREAD+1..GROUP_DEGREE_MAX
    (``n_mid``), then larger (``n_hub``), each sorted by degree (ties in node order). ``small_wg`` and ``mid_wg``
    are the workgroups of the first two bins (64 segments and 2 segments per workgroup of 64),
    ``workgroups`` their sum: the ``edge_probs`` dispatch (hubs: ``edge_probs_hub``, one
    workgroup each)."""

    nodes: np.ndarray
    n_small: int
    n_mid: int
    n_hub: int

    @property
    def small_wg(self) -> int:
        return -(-self.n_small // _THREADS_PER_WG)

    @property
    def mid_wg(self) -> int:
        return -(-self.n_mid // _GROUPS_PER_WG)

    @property
    def workgroups(self) -> int:
        return self.small_wg + self.mid_wg


def degree_bins(out_degree: np.ndarray, thread_max: int = THREAD_DEGREE_MAX) -> DegreeBins:
    """The :class:`DegreeBins` of a graph with these out-degrees ([N] int); ``thread_max``: the
    thread bin's largest degree (THREAD_DEGREE_MAX, or GROUP_DEGREE_MAX for the "cpu" bins)."""
    deg = np.asarray(out_degree)
    # each bin sorted by degree (ties in node order): neighbouring lanes take the same path
    # through the kernel and loops of similar lengths
    order = np.argsort(deg, kind="stable")
    d = deg[order]
    small = order[(d >= 1) & (d <= thread_max)]
    mid = order[(d > thread_max) & (d <= GROUP_DEGREE_MAX)]
    hub = order[d > GROUP_DEGREE_MAX]
    return DegreeBins(np.concatenate([small, mid, hub]), int(small.size), int(mid.size), int(hub.size))


@dataclass(frozen=True)
class SegmentBins:
    """The nodes of one direction (out-segments or in-ranges) binned by degree for the
    softmax + logits backward (segment_backward.wgsl): ``seg`` u32 [N+1 + N] is the pointer
    array followed by EVERY node (degree 0 too: its gradient row is written as zeros) ordered
    small (degree <= THREAD_DEGREE_MAX), mid (<= GROUP_DEGREE_MAX), hub (larger), each bin
    sorted by degree (ties in node order). A graph in edge windows has no ``seg`` on the device
    (None): each window binds its own copy of its part (ops_backward.window_pieces)."""

    seg: DeviceArray | None
    n_small: int
    n_mid: int
    n_hub: int

    @functools.cached_property
    def workgroups(self) -> int:
        """Workgroups of one ``segment_bwd`` dispatch over every node (hence its sum-of-squares
        partials)."""
        return -(-self.n_small // BIN_WG) + -(-self.n_mid // 2) + self.n_hub

    @functools.cached_property
    def serial(self) -> bool:
        """True when every node is in the thread bin: the barrier-free ``segment_bwd_serial``
        runs instead (one thread and one sum-of-squares partial per node)."""
        return self.n_mid == 0 and self.n_hub == 0

    @functools.cached_property
    def serial_threads(self) -> int:
        """Invocations of ``segment_bwd_serial``: one per node up to SERIAL_THREADS, then at
        most SERIAL_NODES_PER_THREAD nodes per invocation (bounds the partials the optimizer's
        one-workgroup reduction reads, and one invocation's loops)."""
        return max(min(self.n_small, SERIAL_THREADS), -(-self.n_small // SERIAL_NODES_PER_THREAD))

    @functools.cached_property
    def partials(self) -> int:
        """The sum-of-squares partials one dispatch over these bins writes."""
        return self.serial_threads if self.serial else self.workgroups

    def uniform(self, num_nodes: int) -> dict[str, int]:
        """The bin fields of the kernel's uniform."""
        return dict(bins_off=num_nodes + 1, n_small=self.n_small, n_mid=self.n_mid, n_hub=self.n_hub)


def row_block_nodes(rt: Any) -> int:
    """Nodes of one batch row's range that fit one binding from any start: bound from the
    aligned offset at or before it, the bound size rounded up to 16 bytes."""
    return (rt.max_binding_bytes - rt.offset_alignment - 16) // 4


def ptr_block(rt: Any, num_nodes: int) -> int:
    """Nodes per block of the graph's pointers (u32 [N + 1]) when one batch row of N nodes is
    past one binding from any start (the aligned offset before it, the size rounded to 16
    bytes: N > (binding - alignment - 16) / 4), else 0. Then every op runs row by row over
    windows of at most ptr_block nodes (wide_rows.py), each a range of a row that fits one
    binding; a block holds the pointers of its nodes and the next one (ptr_block + 1 u32).
    Under a binding of at most alignment + 16 bytes (256 bytes, tests' tiniest limit) no node
    range fits from any start: then the blocks start past 4 (N + 1) bytes (such a graph is
    refused when cut into edge windows: not one edge fits a window)."""
    block = row_block_nodes(rt)
    if block < 1:  # a binding of at most alignment + 16 bytes (tests' tiny limits): no wide rows
        return 0 if 4 * (num_nodes + 1) <= rt.max_binding_bytes else rt.max_binding_bytes // 4 - 1
    return 0 if num_nodes <= block else block


def needs_windows(rt: Any, num_nodes: int, num_edges: int) -> bool:
    """True when a graph is uploaded in edge windows (edge_windows.py): its [E] arrays (4·E
    bytes) or its segment bins (u32 [2N + 1], which the backward binds whole on an unwindowed
    graph) are past one binding."""
    return 4 * num_edges > rt.max_binding_bytes or 4 * (2 * num_nodes + 1) > rt.max_binding_bytes


def binned_segments(ptr: np.ndarray, thread_max: int = THREAD_DEGREE_MAX) -> tuple[np.ndarray, int, int, int]:
    """(pointers followed by the binned node list as u32, n_small, n_mid, n_hub) for the
    pointer array ``ptr`` [N+1] of segments (CSR) or in-ranges (reverse index); ``thread_max``
    as in :func:`degree_bins`."""
    ptr = np.asarray(ptr, dtype=np.int64)
    deg = np.diff(ptr)
    # each bin sorted by degree (stable): neighbouring lanes run loops of similar lengths
    order = np.argsort(deg, kind="stable")
    d = deg[order]
    small = order[d <= thread_max]
    mid = order[(d > thread_max) & (d <= GROUP_DEGREE_MAX)]
    hub = order[d > GROUP_DEGREE_MAX]
    seg = np.concatenate([ptr, small, mid, hub]).astype(np.uint32)
    return seg, int(small.size), int(mid.size), int(hub.size)


@dataclass
class GraphData:
    """Device copies of one graph's index arrays (uploaded once, cached per graph object)."""

    num_nodes: int
    num_edges: int
    row_ptr: DeviceArray | None  # u32 [N+1] (None: in node blocks, ``row_blocks``)
    col_idx: DeviceArray  # u32 [E]
    src: DeviceArray  # u32 [E]
    rev_ptr: DeviceArray | None  # u32 [N+1] (None: in node blocks, ``rev_blocks``)
    rev_pairs: DeviceArray | None  # u32 [E, 2]: (edge, source) grouped by target (None: split, reverse_index.py)
    sink: DeviceArray | None  # u32 [N]: 1 for out-degree 0 (None with pointer blocks: wide_rows.py reads row_ptr)
    large_out: DeviceArray | None  # u32: nodes with out-degree > SMALL
    large_in: DeviceArray | None  # u32: nodes with in-degree > SMALL
    n_large_out: int
    n_large_in: int
    n_nonempty: int
    max_out_degree: int
    max_in_degree: int
    bins: DegreeBins
    seg_list: DeviceArray | None  # u32: bins.nodes (None when every node has out-degree 0)
    bins_out: SegmentBins  # source segments binned by out-degree (the backward)
    bins_in: SegmentBins  # reverse-index ranges binned by in-degree (the backward)
    rev_src: DeviceArray | None = None  # u32 [E]: the sources grouped by target (split layout only)
    rev_edges: DeviceArray | None = None  # u32 [E]: the edges grouped by target (split layout only)
    #: the edge windows of a graph whose [E] arrays are past one binding (edge_windows.py), else None
    windows: list[EdgeWindow] | None = None
    #: the limit a windowed graph's windows are sized by (named, for refusals)
    limit_desc: str = ""
    #: the windows of targets over the reverse index (rev_src / rev_edges in their layout), or
    #: None (not windowed, or refused: ``rev_refusal`` says why)
    rwindows: list[EdgeWindow] | None = None
    rev_refusal: str = ""
    #: the row plans of q and k past one binding, by dimension (node_rows.py; made on first use)
    row_plans: dict[int, Any] = field(default_factory=dict)
    #: ops_backward.window_runs: per (bins, windows), each window's runs of the bins' units
    segment_runs: dict[Any, Any] = field(default_factory=dict)
    #: nodes per pointer block when the [N + 1] pointers are past one binding (:func:`ptr_block`),
    #: else 0; block b of ``row_blocks`` / ``rev_blocks`` holds the pointers of nodes b·ptr_block ..
    #: (b + 1)·ptr_block, both ends (every window lies in one block)
    ptr_block: int = 0
    row_blocks: list[DeviceArray] | None = None
    rev_blocks: list[DeviceArray] | None = None

    def node_ptr(self, reverse: bool, n0: int) -> tuple[DeviceArray, int]:
        """(the pointer array to bind, shift) for a window whose first node is ``n0``: the
        graph's row_ptr (rev_ptr with ``reverse``) and 0, or the node block holding the window and
        its first node (node j's pointer at ``j - shift``)."""
        if not self.ptr_block:
            arr = self.rev_ptr if reverse else self.row_ptr
            assert arr is not None
            return arr, 0
        b = n0 // self.ptr_block
        blocks = self.rev_blocks if reverse else self.row_blocks
        assert blocks is not None
        return blocks[b], b * self.ptr_block

    def reverse_windows(self, op: str) -> list[EdgeWindow]:
        """The windows of targets of a windowed graph.

        Raises:
            DeviceLimitError: naming ``op``, when a target has more in-edges than one window holds
                and a window is too small for its pieces.
        """
        if self.rwindows is None:
            raise DeviceLimitError(f"{op}: {self.rev_refusal}")
        return self.rwindows

    def device_arrays(self) -> list[DeviceArray]:
        """Every device array of the graph data (the bins' ``seg`` arrays and the windows'
        node lists included)."""
        values = [getattr(v, "seg", v) for v in vars(self).values()] + (self.row_blocks or []) + (self.rev_blocks or [])
        wins = (self.windows or []) + (self.rwindows or [])
        for plan in self.row_plans.values():
            wins = wins + plan.windows + (plan.rwindows or [])
            values += [plan.rev_src, plan.rev_edges]
        values += [x for w in wins for x in (w.seg_list, w.large)]
        return [v for v in values if isinstance(v, DeviceArray)]


def upload_graph(backend: Any, graph: Graph) -> GraphData:
    """Upload ``graph``'s CSR and reverse (CSC) indices (the latter split past one binding:
    reverse_index.py), sinks, large-degree node lists and the forward's degree bins (the
    thread bin up to ``backend.thread_degree_max``)."""

    def up(a: np.ndarray) -> DeviceArray:
        return backend.asarray(np.ascontiguousarray(a, dtype=np.uint32), np.uint32)

    rt = backend.runtime
    if needs_windows(rt, graph.num_nodes, graph.num_edges):
        return _upload_windowed(backend, graph, up)
    large_out = np.flatnonzero(graph.out_degree > SMALL_DEGREE_MAX)
    large_in = np.flatnonzero(graph.in_degree > SMALL_DEGREE_MAX)
    thread_max = backend.thread_degree_max
    bins = degree_bins(graph.out_degree, thread_max)

    def seg_bins(ptr: np.ndarray) -> SegmentBins:
        seg, n_small, n_mid, n_hub = binned_segments(ptr, thread_max)
        return SegmentBins(up(seg), n_small, n_mid, n_hub)

    return GraphData(
        num_nodes=graph.num_nodes,
        num_edges=graph.num_edges,
        row_ptr=up(graph.row_ptr),
        col_idx=up(graph.col_idx),
        src=up(graph.src),
        rev_ptr=up(graph.rev_ptr),
        **reverse_index.upload(up, graph, backend.runtime.max_binding_bytes),
        sink=up(graph.sink_mask.astype(np.uint32)),
        large_out=up(large_out) if large_out.size else None,
        large_in=up(large_in) if large_in.size else None,
        n_large_out=int(large_out.size),
        n_large_in=int(large_in.size),
        n_nonempty=int(np.count_nonzero(graph.out_degree)),
        max_out_degree=int(graph.out_degree.max(initial=0)),
        max_in_degree=int(graph.in_degree.max(initial=0)),
        bins=bins,
        seg_list=up(bins.nodes) if bins.nodes.size else None,
        bins_out=seg_bins(graph.row_ptr),
        bins_in=seg_bins(graph.rev_ptr),
    )


def source_window(up: Any, graph: Graph, n0: int, n1: int, thread_max: int) -> EdgeWindow:
    """The window of sources ``n0 .. n1`` of ``graph``: its degree bins, their node list and its
    nodes of out-degree over SMALL_DEGREE_MAX, uploaded by ``up`` (u32 host array -> device)."""
    deg, ptr = graph.out_degree, graph.row_ptr
    b = degree_bins(deg[n0:n1], thread_max)
    b = DegreeBins(b.nodes + n0, b.n_small, b.n_mid, b.n_hub)
    large = np.flatnonzero(deg[n0:n1] > SMALL_DEGREE_MAX) + n0
    return EdgeWindow(n0, n1, int(ptr[n0]), int(ptr[n1]), b, up(b.nodes) if b.nodes.size else None,
                      up(large) if large.size else None, int(large.size))


def target_window(up: Any, graph: Graph, k0: int, k1: int) -> EdgeWindow:
    """The window of targets ``k0 .. k1`` of ``graph``'s reverse index and its targets of
    in-degree over SMALL_DEGREE_MAX (uploaded by ``up``)."""
    rev = graph.rev_ptr
    large = np.flatnonzero(graph.in_degree[k0:k1] > SMALL_DEGREE_MAX) + k0
    return EdgeWindow(k0, k1, int(rev[k0]), int(rev[k1]), large=up(large) if large.size else None,
                      n_large=int(large.size))


def _upload_windowed(backend: Any, graph: Graph, up: Any) -> GraphData:
    """:func:`upload_graph` of a graph whose [E] arrays or segment bins are past one binding
    (:func:`needs_windows`): its edge windows (edge_windows.py; at most
    ``edge_windows.max_window_nodes`` nodes each), col_idx and src in the windows' layout, the
    windows' degree bins; the windows of targets and the split reverse index (sources and edges
    by target) in their layout, a target of more in-edges than a window holds in windows of
    its pieces (edge_windows.BIG_STRIDE), unless a window holds fewer than 256 (``rev_refusal``). The backward's segment bins stay on the host: each window uploads its
    own part when the backward first runs (ops_backward.window_pieces)."""
    rt = backend.runtime
    desc, where = rt.pool.limit_desc
    limit_desc = f"{desc} = {rt.max_binding_bytes} bytes, {where}"
    max_edges = edge_windows.max_window_edges(rt.max_binding_bytes, rt.offset_alignment)
    max_nodes = edge_windows.max_window_nodes(rt.max_binding_bytes)
    thread_max = backend.thread_degree_max
    windows: list[EdgeWindow] = []
    deg = graph.out_degree
    ptr = graph.row_ptr
    piece = max_edges // edge_windows.BIG_STRIDE * edge_windows.BIG_STRIDE  # a big hub's entries per piece
    big_above = max(GROUP_DEGREE_MAX, max_edges) if piece else 0
    # a big source hub's carry (edge_probs_piece's 4 KiB of lanes) fits a binding of 4 KiB
    out_above = big_above if rt.max_binding_bytes >= edge_windows.BIG_SOURCE_BINDING else 0
    block = ptr_block(rt, graph.num_nodes)  # pointers past one binding: no window crosses a node block
    for n0, n1 in edge_windows.plan(ptr, max_edges, limit_desc, max_nodes=max_nodes, big_above=out_above,
                                    block=block):
        if ptr[n1] - ptr[n0] > max_edges:  # a big source hub: a window per piece of its out-edges
            windows += [EdgeWindow(n0, n1, int(p), int(min(p + piece, ptr[n1])), big=True)
                        for p in range(int(ptr[n0]), int(ptr[n1]), piece)]
        else:
            windows.append(source_window(up, graph, n0, n1, thread_max))
    def up_edges(a: np.ndarray, wins: list[EdgeWindow]) -> DeviceArray:
        arr = rt.pool.new_split_array(backend, (graph.num_edges,), np.uint32, 1, rt.offset_alignment, "edge index",
                                      cuts=[w.e0 for w in wins])
        rt.write(arr, np.ascontiguousarray(a, dtype=np.uint32))
        return arr

    rev = graph.rev_ptr
    rwindows: list[EdgeWindow] | None = None
    refusal = ""
    try:
        rwindows = []
        for k0, k1 in edge_windows.plan(rev, max_edges, limit_desc, "in-edges", max_nodes=max_nodes,
                                        big_above=big_above, block=block):
            if rev[k1] - rev[k0] > max_edges:  # a big in-hub: a window per piece of its range
                rwindows += [EdgeWindow(k0, k1, int(p), int(min(p + piece, rev[k1])), big=True)
                             for p in range(int(rev[k0]), int(rev[k1]), piece)]
            else:
                rwindows.append(target_window(up, graph, k0, k1))
    except DeviceLimitError as exc:
        rwindows, refusal = None, str(exc)
    rev_fields: dict[str, Any] = dict(rev_src=None, rev_edges=None)
    if rwindows is not None:
        perm = graph.rev_perm
        rev_fields = dict(rev_src=up_edges(graph.src[perm], rwindows), rev_edges=up_edges(perm, rwindows))

    def seg_bins(p: np.ndarray) -> SegmentBins:  # the global bins' counts (each window binds its part)
        _, n_small, n_mid, n_hub = binned_segments(p, thread_max)
        return SegmentBins(None, n_small, n_mid, n_hub)

    def blocks(p: np.ndarray) -> list[DeviceArray]:  # node block b: the pointers of nodes b·block .. (b+1)·block
        return [up(p[b:b + block + 1]) for b in range(0, graph.num_nodes, block)]

    return GraphData(
        num_nodes=graph.num_nodes,
        num_edges=graph.num_edges,
        row_ptr=None if block else up(ptr),
        col_idx=up_edges(graph.col_idx, windows),
        src=up_edges(graph.src, windows),
        rev_ptr=None if block else up(graph.rev_ptr),
        rev_pairs=None,
        sink=None if block else up(graph.sink_mask.astype(np.uint32)),
        ptr_block=block,
        row_blocks=blocks(ptr) if block else None,
        rev_blocks=blocks(rev) if block else None,
        large_out=None,
        large_in=None,
        n_large_out=0,
        n_large_in=0,
        n_nonempty=int(np.count_nonzero(deg)),
        max_out_degree=int(deg.max(initial=0)),
        max_in_degree=int(graph.in_degree.max(initial=0)),
        bins=degree_bins(deg, thread_max),
        seg_list=None,
        bins_out=seg_bins(ptr),
        bins_in=seg_bins(rev),
        windows=windows,
        limit_desc=limit_desc,
        rwindows=rwindows,
        rev_refusal=refusal,
        **rev_fields,
    )
