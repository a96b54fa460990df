"""The kernel table of the wgpu backend: one row per compute kernel, declared once.

A row (:class:`KernelSpec`) names the WGSL file holding the entry point, the entry point, the
workgroup size (the ``WG`` override constant), the uniform struct (:class:`Uniform`: field
names and types, declared once per struct and shared by the kernels that bind it) and the
storage bindings *by name*. Binding numbers and access modes are read from the file's
``@group(0) @binding(n) var<...> name`` lines the first time a kernel is used;
``tests/test_kernel_table.py`` checks every row against its WGSL (names, access modes, the
uniform struct's fields and types). Ops dispatch with names::

    rt.dispatch("scatter_small", threads=n, uniform=dict(batch=b, alpha=a, ...), pi=pi, xt=x, ...)

(uniform fields named ``_pad*`` are zero and need not be given). The table is data: the
runtime builds explicit bind group layouts from it, and ``to_dict`` describes a kernel for
the Dawn plan replay (``energetic_wgpu/web/runner.js``).

Portability budget of every kernel (WebGPU default limits, core WGSL): at most 8 storage
bindings, at most 256 invocations per workgroup, at most 16 KiB of workgroup memory, no f32
atomics, no f16, no subgroups.
"""

from __future__ import annotations

import functools
import json
import operator
import re
import struct
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ...errors import InvalidArgumentError

__all__ = [
    "KernelSpec",
    "Uniform",
    "KERNELS",
    "kernel",
    "kernel_sources",
    "wgsl_bindings",
    "SHADER_LIBS",
    "BINDING_KINDS",
    "SMALL_DEGREE_MAX",
    "THREAD_DEGREE_MAX",
    "GROUP_DEGREE_MAX",
    "CPU_THREAD_DEGREE_MAX",
    "REDUCE_ITEMS",
    "BIN_WG",
]

BINDING_KINDS = ("uniform", "read", "read_write")

#: segments / in-degrees up to this are handled thread-per-node; larger ones workgroup-per-node
SMALL_DEGREE_MAX = 256
#: the degree bins of the forward (edge_probs.wgsl SMALL_MAX, MID_MAX) and of the softmax + logits
#: backward (segment_backward.wgsl): degree up to THREAD run one thread per segment,
#: THREAD+1..GROUP a group of 32 lanes per segment, larger a workgroup
THREAD_DEGREE_MAX = 16
GROUP_DEGREE_MAX = 256
#: the thread bin's largest degree with the "cpu" degree bins (WgpuBackend(degree_bins=...)):
#: Poisson-like graphs then need no 32-lane group bin (no barriers). Kept small because
#: llvmpipe ends every invocation's loops after 65,535 iterations in all (docs/kernels.md).
CPU_THREAD_DEGREE_MAX = 32
#: workgroup size of the binned backward (nodes per thread-bin workgroup)
BIN_WG = 64
#: elements per thread in the reduction kernels (reduce.wgsl, metrics.wgsl)
REDUCE_ITEMS = 16

#: WGSL library files (no entry points) a kernel file needs, concatenated in this order between
#: common.wgsl and the file itself. workgroup_reduce.wgsl: LWG, red_a/red_b and tree_sum;
#: row_dot.wgsl: dot products of q/k rows read as vec4.
SHADER_LIBS: dict[str, tuple[str, ...]] = {
    "edge_logits.wgsl": ("row_dot.wgsl",),
    "edge_probs.wgsl": ("workgroup_reduce.wgsl", "row_dot.wgsl"),
} | {
    f: ("workgroup_reduce.wgsl",)
    for f in (
        "energy_scatter.wgsl",
        "reduce.wgsl",
        "losses.wgsl",
        "adamw.wgsl",
        "scatter_backward.wgsl",
        "softmax_backward.wgsl",
        "logits_backward.wgsl",
    )
}


def kernel_sources(file: str) -> tuple[str, ...]:
    """The ``sources`` of a kernel whose entry point is in ``file``: common.wgsl, the libraries
    ``file`` needs (:data:`SHADER_LIBS`), then ``file`` (always last)."""
    return ("common.wgsl", *SHADER_LIBS.get(file, ()), file)


_BINDING_RE = re.compile(r"@group\(0\)\s*@binding\((\d+)\)\s*var<([^>]*)>\s*(\w+)\s*:\s*([\w<>]+)")


@functools.lru_cache(maxsize=None)
def wgsl_bindings(sources: tuple[str, ...]) -> dict[str, tuple[int, str, str]]:
    """name -> (binding number, kind, WGSL type) of every ``@group(0) @binding(n) var<...>``
    line of the concatenated ``sources``; kind is "uniform", "read" or "read_write"."""
    from ...wgsl import shader_source

    out: dict[str, tuple[int, str, str]] = {}
    for src in sources:
        for m in _BINDING_RE.finditer(shader_source(src)):
            space = [s.strip() for s in m.group(2).split(",")]
            kind = "uniform" if space[0] == "uniform" else ("read_write" if "read_write" in space else "read")
            out[m.group(3)] = (int(m.group(1)), kind, m.group(4))
    return out


# --------------------------------------------------------------------------- uniforms

_CODES = {"u32": "I", "i32": "i", "f32": "f", "vec4<u32>": "IIII"}


class Uniform:
    """A WGSL uniform struct: its name and its fields ``name=type`` in order (types "u32",
    "i32", "f32", "vec4<u32>"; every scalar 4 bytes). Fields named ``_pad*`` are padding
    (always zero, never given).

    :meth:`pack` turns ``{field: value}`` into the struct's bytes: little-endian, f32 values
    rounded as ``np.float32(value)``; a vec4 field takes a sequence of 4 values.
    """

    def __init__(self, name: str, **fields: str) -> None:
        for f, t in fields.items():
            if t not in _CODES:
                raise ValueError(f"uniform {name}.{f}: type {t!r} not in {sorted(_CODES)}")
        self.name = name
        self.fields: tuple[tuple[str, str], ...] = tuple(fields.items())
        self.names = tuple(f for f, _ in self.fields if not f.startswith("_pad"))
        self._vec = any(t.startswith("vec") for _, t in self.fields)
        #: values of the fields in order, from a dict (a C-level getter: the dispatch hot path)
        self.values_of = _getter(self.names)
        fmt = "".join("xxxx" if f.startswith("_pad") else _CODES[t] for f, t in self.fields)
        self._struct = struct.Struct("<" + fmt)
        if self._struct.size % 16:
            raise ValueError(f"uniform {name}: {self._struct.size} bytes, not a multiple of 16")

    def __repr__(self) -> str:
        return f"Uniform({self.name!r}, " + ", ".join(f"{f}={t!r}" for f, t in self.fields) + ")"

    def pack(self, values: Mapping[str, Any]) -> bytes:
        """The struct's bytes for ``values`` (a dict of every non-padding field).

        Raises:
            InvalidArgumentError: a field missing or unknown, or an integer out of range.
        """
        names = self.names
        if len(values) == len(names):
            try:
                if not self._vec:
                    return self._struct.pack(*self.values_of(values))
                flat: list[Any] = []
                for n in names:
                    v = values[n]
                    flat.extend(v) if isinstance(v, (tuple, list)) else flat.append(v)
                return self._struct.pack(*flat)
            except (KeyError, struct.error, OverflowError, TypeError):
                pass
        return self._pack_checked(values)

    def _pack_checked(self, values: Mapping[str, Any]) -> bytes:
        """The slow path of :meth:`pack`: named errors; floats that overflow f32 become inf."""
        if not isinstance(values, Mapping):
            raise InvalidArgumentError(f"uniform {self.name} must be a dict of its fields {self.names}, "
                                       f"got {type(values).__name__}")
        missing = [n for n in self.names if n not in values]
        unknown = [k for k in values if k not in self.names]
        if missing or unknown:
            raise InvalidArgumentError(
                f"uniform {self.name}: missing fields {missing}, unknown fields {unknown}; fields: {list(self.names)}"
            )
        out = bytearray()
        for f, t in self.fields:
            if f.startswith("_pad"):
                out += b"\0\0\0\0"
                continue
            vals = values[f]
            items = list(vals) if t.startswith("vec") else [vals]
            if t.startswith("vec") and len(items) != 4:
                raise InvalidArgumentError(f"uniform field {self.name}.{f} ({t}) needs 4 values, got {len(items)}")
            for v in items:
                out += _scalar_bytes(self.name, f, t.removeprefix("vec4<").rstrip(">"), v)
        return bytes(out)


def _getter(names: tuple[str, ...]) -> Any:
    """``f(mapping) -> tuple`` of the values of ``names`` in order."""
    if len(names) == 1:
        only = names[0]
        return lambda m: (m[only],)
    return operator.itemgetter(*names)


def _scalar_bytes(struct_name: str, field_name: str, t: str, v: Any) -> bytes:
    what = f"uniform field {struct_name}.{field_name} ({t})"
    if t == "f32":
        if not isinstance(v, (int, float, np.integer, np.floating)):
            raise InvalidArgumentError(f"{what} must be a number, got {type(v).__name__}")
        with np.errstate(over="ignore"):
            return np.float32(v).tobytes()
    if isinstance(v, (float, np.floating)) or not isinstance(v, (int, np.integer)):
        raise InvalidArgumentError(f"{what} must be an int, got {type(v).__name__}")
    lo, hi = (0, 2**32 - 1) if t == "u32" else (-(2**31), 2**31 - 1)
    if not lo <= int(v) <= hi:
        raise InvalidArgumentError(f"{what} = {int(v)} does not fit in {t}")
    return struct.pack("<I" if t == "u32" else "<i", int(v))


# --------------------------------------------------------------------------- kernels


@dataclass(frozen=True)
class KernelSpec:
    """One kernel: ``name``, ``file`` (the WGSL file of its entry point), ``uniform`` (its
    struct), ``names`` (its storage bindings by WGSL variable name), ``workgroup_size`` and
    ``entry_point`` (default: ``name``). Binding numbers and kinds come from the WGSL."""

    name: str
    file: str
    uniform: Uniform
    names: tuple[str, ...]
    workgroup_size: int = 64
    entry_point: str = ""
    constants: tuple[tuple[str, float | int], ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.entry_point:
            object.__setattr__(self, "entry_point", self.name)
        if len(self.names) > 8:
            raise ValueError(f"kernel {self.name}: {len(self.names)} storage bindings > 8 (WebGPU default)")
        if not 1 <= self.workgroup_size <= 256:
            raise ValueError(f"kernel {self.name}: workgroup_size {self.workgroup_size} not in [1, 256]")

    @property
    def sources(self) -> tuple[str, ...]:
        return kernel_sources(self.file)

    @functools.cached_property
    def slots(self) -> dict[str, tuple[int, str]]:
        """name -> (binding number, kind) of the uniform and every storage binding, from the WGSL."""
        found = wgsl_bindings(self.sources)
        uniform_vars = [n for n, (_, kind, typ) in found.items() if kind == "uniform" and typ == self.uniform.name]
        if len(uniform_vars) != 1:
            raise InvalidArgumentError(
                f"kernel {self.name}: {self.file} must bind exactly one var<uniform> of type {self.uniform.name}, "
                f"found {uniform_vars}"
            )
        out = {uniform_vars[0]: found[uniform_vars[0]][:2]}
        for n in self.names:
            if n not in found or found[n][1] == "uniform":
                raise InvalidArgumentError(f"kernel {self.name}: {self.file} has no storage binding named {n!r}")
            out[n] = found[n][:2]
        return out

    @functools.cached_property
    def bindings(self) -> tuple[str | None, ...]:
        """The kind of each binding number 0..max ("uniform", "read", "read_write"; None: unused)."""
        slots = self.slots
        kinds: list[str | None] = [None] * (1 + max(n for n, _ in slots.values()))
        for n, kind in slots.values():
            kinds[n] = kind
        return tuple(kinds)

    @functools.cached_property
    def storage_names(self) -> tuple[str, ...]:
        """The storage binding names in binding-number order (what a dispatch binds)."""
        return tuple(sorted(self.names, key=lambda n: self.slots[n][0]))

    @functools.cached_property
    def buffers_of(self) -> Any:
        """``f(buffers by name) -> tuple`` in :attr:`storage_names` order (a C-level getter)."""
        return _getter(self.storage_names)

    @property
    def storage_bindings(self) -> tuple[int, ...]:
        """Binding numbers of the storage buffers, in order."""
        return tuple(self.slots[n][0] for n in self.storage_names)

    @property
    def uniform_binding(self) -> int:
        return self.bindings.index("uniform")

    def override_constants(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {"WG": self.workgroup_size}
        out.update(dict(self.constants))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sources": list(self.sources),
            "entry_point": self.entry_point,
            "bindings": list(self.bindings),
            "workgroup_size": self.workgroup_size,
            "constants": self.override_constants(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


# --------------------------------------------------------------------------- the table

U32, I32, F32, VEC4 = "u32", "i32", "f32", "vec4<u32>"

COPY = Uniform("CopyParams", n=U32, n_vec=U32, _pad0=U32, _pad1=U32)
ADD = Uniform("AddParams", n=U32, lo=U32, count=U32, base=U32, off=U32, dim=U32, _pad1=U32, _pad2=U32)
LOGITS = Uniform("LogitParams", n_edges=U32, dim=U32, e0=U32, gathered=U32, q_shift=U32, _pad0=U32, _pad1=U32,
                 _pad2=U32)
PROBS = Uniform("ProbParams", n_small=U32, n_mid=U32, n_hub=U32, small_wg=U32, mid_wg=U32, dim=U32, top_k=U32,
                mode=U32, tau=F32, ebase=U32, gathered=U32, q_shift=U32, phase=U32, round=U32, ps=U32, pt=U32,
                pos=U32, deg=U32, node=U32, first=U32, last=U32, p_shift=U32, _pad1=U32, _pad2=U32)
SCATTER = Uniform("ScatterParams", batch=U32, n_nodes=U32, flags=U32, n_large=U32, alpha=F32, small_max=U32,
                  e0=U32, node0=U32, n_count=U32, rbase=U32, b0=U32, piece=U32, p_shift=U32, _pad0=U32, _pad1=U32,
                  _pad2=U32)
FLOW = Uniform("FlowParams", batch=U32, n_nodes=U32, n_edges=U32, has_active=U32, alpha=F32, edge_blocks=U32,
               row0=U32, out0=U32, e0=U32, eoff=U32, _pad1=U32, _pad2=U32)
METRICS = Uniform("MetricParams", batch=U32, n_nodes=U32, n_edges=U32, has_active=U32, alpha=F32, n_total=U32,
                  n_nonempty=U32, edge_blocks=U32, grid_blocks=U32, w0=U32, fields=U32, row0=U32, e0=U32,
                  pbase=U32, _pad1=U32, _pad2=U32)
REDUCE = Uniform("ReduceParams", n=U32, out_offset=U32, n1=U32, n2=U32)
SCATTER_BWD = Uniform("ScatterBwdParams", batch=U32, n_nodes=U32, flags=U32, n_large=U32, alpha=F32, small_max=U32,
                      n_edges=U32, e0=U32, node0=U32, n_count=U32, ebase=U32, eoff=U32, b0=U32, ps=U32, pt=U32,
                      piece=U32, p_shift=U32, _pad0=U32, _pad1=U32, _pad2=U32)
SOFTMAX_BWD = Uniform("SoftmaxBwdParams", n_nodes=U32, n_large=U32, small_max=U32, node0=U32, tau=F32, n_count=U32,
                      ebase=U32, p_shift=U32)
LOGITS_BWD = Uniform("LogitsBwdParams", n_nodes=U32, dim=U32, mode=U32, n_large=U32, small_max=U32, node0=U32,
                     n_count=U32, ebase=U32, gathered=U32, o_shift=U32, p_shift=U32, _pad1=U32)
SEG_BWD = Uniform("SegBwdParams", n_nodes=U32, dim=U32, mode=U32, bins_off=U32, n_small=U32, n_mid=U32, n_hub=U32,
                  out_offset=U32, tau=F32, n_threads=U32, node0=U32, node1=U32, ebase=U32, lanes=U32, w_first=U32,
                  gathered=U32, o_shift=U32, p_shift=U32, _pad1=U32, _pad2=U32)
LOSS = Uniform("LossParams", n=U32, flags=U32, n_parts=U32, mode=U32, mul=F32, div=F32, eps=F32, lam=F32, w0=U32,
               n_all=U32, _pad0=U32, _pad1=U32)
ADAMW_PREPARE = Uniform("PrepareParams", n_parts=U32, clip=U32, has_loss=U32, counters=U32, max_norm=F32,
                        log_b1=F32, log_b2=F32, n_loss=U32)
_ADAMW_HYPER = dict(b1=F32, omb1=F32, b2=F32, omb2=F32, eps=F32, _pad2=F32, _pad3=F32, _pad4=F32)
ADAMW_UPDATE = Uniform("UpdateParams", n=U32, slot=U32, e0=U32, _pad1=U32, **_ADAMW_HYPER)
HUB = Uniform("HubParams", s=U32, t=U32, dim=U32, first=U32, last=U32, o_row=U32, c0=U32, gathered=U32, tau=F32,
              _pad0=U32, _pad1=U32, _pad2=U32)
ADAMW_PACKED = Uniform("PackedParams", n=U32, slot=U32, _pad0=U32, _pad1=U32, **_ADAMW_HYPER, off=VEC4, len=VEC4)

_PROBS = ("row_ptr", "col_idx", "q", "k", "bias", "result", "seg_list")
_SCATTER_IN = ("rev_ptr", "rev_pairs", "pi", "sink", "next_e", "xt", "act_t")
_SCATTER_BWD = ("row_ptr", "col_idx", "pi", "grad_next", "act_mask", "sink", "out")
_LOGITS_BWD = ("seg_ptr", "idx", "grad_logits", "feat", "out")

KERNELS: dict[str, KernelSpec] = {
    k.name: k
    for k in (
        # forward (backend.py)
        KernelSpec("copy_vec4", "copy.wgsl", COPY, ("src", "dst")),
        KernelSpec("add", "elementwise.wgsl", ADD, ("a", "b", "out")),
        KernelSpec("gather", "elementwise.wgsl", ADD, ("a", "index", "out")),
        KernelSpec("gather_window", "elementwise.wgsl", ADD, ("a", "index", "out")),
        KernelSpec("gather_rows", "elementwise.wgsl", ADD, ("a", "index", "out")),
        KernelSpec("edge_logits", "edge_logits.wgsl", LOGITS, ("src", "col_idx", "q", "k", "bias", "logits")),
        KernelSpec("edge_probs", "edge_probs.wgsl", PROBS, _PROBS, 64),
        KernelSpec("edge_probs_small", "edge_probs.wgsl", PROBS, _PROBS, 64),
        KernelSpec("edge_probs_hub", "edge_probs.wgsl", PROBS, _PROBS, 256),
        KernelSpec("edge_probs_piece", "edge_probs.wgsl", PROBS, ("col_idx", "q", "k", "bias", "result", "carry", "carry_lanes"),
                   256),
        KernelSpec("scatter_transpose", "energy_scatter.wgsl", SCATTER, ("energies", "act_mask", "xt_out", "act_out")),
        KernelSpec("scatter_rows", "energy_scatter.wgsl", SCATTER, ("xt", "next_e")),
        KernelSpec("scatter_small", "energy_scatter.wgsl", SCATTER, _SCATTER_IN),
        KernelSpec("scatter_large", "energy_scatter.wgsl", SCATTER, _SCATTER_IN + ("large_nodes",), 256),
        KernelSpec("scatter_large_piece", "energy_scatter.wgsl", SCATTER,
                   ("rev_pairs", "pi", "sink", "next_e", "xt", "act_t", "carry"), 256),
        KernelSpec("scatter_gather", "energy_scatter.wgsl", SCATTER, ("rev_pairs", "energies", "act_mask", "next_e")),
        KernelSpec("edge_flow", "edge_flow.wgsl", FLOW, ("src", "pi", "energies", "act_mask", "flow")),
        KernelSpec("metrics_partials", "metrics.wgsl", METRICS,
                   ("src", "pi", "energies", "next_e", "act_mask", "partials"), 256),
        KernelSpec("metrics_final", "metrics.wgsl", METRICS, ("partials", "metrics_out"), 256),
        KernelSpec("sumsq_partials", "reduce.wgsl", REDUCE, ("x", "x1", "x2", "result"), 256),
        KernelSpec("sum_final", "reduce.wgsl", REDUCE, ("x", "result"), 256),
        # backward (ops_backward.py)
        KernelSpec("scatter_bwd_small", "scatter_backward.wgsl", SCATTER_BWD, _SCATTER_BWD),
        KernelSpec("scatter_bwd_large", "scatter_backward.wgsl", SCATTER_BWD, _SCATTER_BWD + ("large_nodes",), 256),
        KernelSpec("scatter_bwd_large_piece", "scatter_backward.wgsl", SCATTER_BWD,
                   ("col_idx", "pi", "grad_next", "act_mask", "sink", "out", "lanes"), 256),
        KernelSpec("scatter_bwd_pi", "scatter_backward.wgsl", SCATTER_BWD,
                   ("col_idx", "grad_next", "act_mask", "out", "src", "energies", "acc_in", "carry_comp")),
        KernelSpec("scatter_bwd_pi_nm", "scatter_backward.wgsl", SCATTER_BWD,
                   ("col_idx", "grad_next", "act_mask4", "out", "src", "energies4", "acc_in", "carry_comp")),
        KernelSpec("softmax_bwd_small", "softmax_backward.wgsl", SOFTMAX_BWD, ("row_ptr", "pi", "gpi", "out")),
        KernelSpec("softmax_bwd_large", "softmax_backward.wgsl", SOFTMAX_BWD,
                   ("row_ptr", "pi", "gpi", "out", "large_nodes"), 256),
        KernelSpec("logits_bwd_small", "logits_backward.wgsl", LOGITS_BWD, _LOGITS_BWD),
        KernelSpec("logits_bwd_large", "logits_backward.wgsl", LOGITS_BWD, _LOGITS_BWD + ("large_nodes",), 256),
        KernelSpec("segment_bwd", "segment_backward.wgsl", SEG_BWD,
                   ("seg", "idx", "pi", "gpi", "dl", "feat", "out", "partials"), BIN_WG),
        KernelSpec("segment_bwd_serial", "segment_backward.wgsl", SEG_BWD,
                   ("seg", "idx", "pi", "gpi", "dl", "feat", "out", "partials")),
        KernelSpec("segment_bwd_lanes", "segment_backward.wgsl", SEG_BWD, ("feat", "partials"), BIN_WG),
        KernelSpec("segment_bwd_serial_lanes", "segment_backward.wgsl", SEG_BWD, ("feat", "partials")),
        KernelSpec("segment_bwd_serial_carry", "segment_backward.wgsl", SEG_BWD, ("feat", "partials", "lanes_carry")),
        # a big hub of a row plan in pieces (node_rows.py): segment_bwd's 64 lanes, logits_bwd_large's 256
        KernelSpec("hub_columns", "hub_pieces.wgsl", HUB, ("values", "feat", "carry", "out", "index"), BIN_WG),
        KernelSpec("hub_columns_256", "hub_pieces.wgsl", HUB, ("values", "feat", "carry", "out", "index"), 256,
                   entry_point="hub_columns"),
        KernelSpec("hub_sq", "hub_pieces.wgsl", HUB, ("carry", "out")),
        # a big source hub of edge windows in pieces (ops_backward.py): segment_bwd's dot and dl,
        # softmax_bwd_large's with 256 lanes
        KernelSpec("hub_dot", "hub_pieces.wgsl", HUB, ("values", "feat", "carry"), BIN_WG),
        KernelSpec("hub_dot_256", "hub_pieces.wgsl", HUB, ("values", "feat", "carry"), 256, entry_point="hub_dot"),
        KernelSpec("hub_dl", "hub_pieces.wgsl", HUB, ("values", "feat", "carry", "out", "dot_in"), BIN_WG),
        KernelSpec("hub_dl_256", "hub_pieces.wgsl", HUB, ("values", "feat", "carry", "out", "dot_in"), 256,
                   entry_point="hub_dl"),
        # losses and AdamW (ops_train.py)
        KernelSpec("mse_partials", "losses.wgsl", LOSS, ("pred", "target_", "mask", "partials", "grad"), 256),
        KernelSpec("loss_final", "losses.wgsl", LOSS, ("partials", "loss"), 256),
        KernelSpec("mse_grad", "losses.wgsl", LOSS, ("pred", "target_", "mask", "partials", "grad")),
        KernelSpec("mse_grad_counted", "losses.wgsl", LOSS, ("pred", "target_", "mask", "partials", "grad"), 256),
        KernelSpec("ce_partials", "losses.wgsl", LOSS, ("pred", "target_", "partials", "grad"), 256),
        KernelSpec("ent_partials", "losses.wgsl", LOSS, ("pred", "partials", "grad"), 256),
        KernelSpec("adamw_prepare", "adamw.wgsl", ADAMW_PREPARE,
                   ("partials", "step_count", "scal_w", "norm_out", "loss_io", "skip_out", "loss_parts"), 256),
        KernelSpec("adamw_update", "adamw.wgsl", ADAMW_UPDATE,
                   ("param", "grad", "exp_avg", "exp_avg_sq", "scal", "hyper")),
        KernelSpec("adamw_update_packed", "adamw.wgsl", ADAMW_PACKED,
                   ("p_flat", "m_flat", "v_flat", "grad0", "grad1", "grad2", "scal_p", "hyper_p")),
    )
}


def kernel(name: str) -> KernelSpec:
    try:
        return KERNELS[name]
    except KeyError:
        raise KeyError(f"unknown kernel {name!r}; known: {', '.join(sorted(KERNELS))}") from None
