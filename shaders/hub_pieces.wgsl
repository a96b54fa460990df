// hub_pieces.wgsl: a big hub's column sums in pieces (node_rows.py): a hub whose entries are
// more than one row window's gathered rows hold runs its column sums over pieces of its entries,
// each piece's rows gathered on their own.
//
// out[j, c] = sum over the hub's entries r of values[r] * feat[row_r, c] (row_r = r: the piece's
// gathered rows, row r for entry r of the bound ranges; else index[r]), exactly as the workgroup of WG lanes
// of the kernel it stands for sums it: lane l takes entries l, l + WG, ... from the segment's
// first in order (a compensated sum, kahan_add), then a fixed binary tree of kahan_merge over
// the WG lanes. `hub_columns` runs one workgroup per column over one piece, which starts at a
// multiple of WG entries from the segment's first, so each lane meets its entries in the same
// order: its (sum, comp) is loaded from `carry` (unless `first`), advanced over the piece and
// stored back (unless `last`, which reduces the lanes and writes out). WG 64: segment_bwd's
// hub (its group_sum over 64 lanes); WG 256: logits_bwd_large (tree_sum). The same bits.
//
// A big source hub's softmax backward (more out-edges than an edge window holds, edge_windows.py)
// in pieces the same way: `hub_dot` carries each lane's compensated sum of values[e] * feat[e]
// (pi * gpi) in carry[2 lid ..] and writes the tree's total, the dot, to carry[2 WG] at the last
// piece; `hub_dl` then writes out[e] = values[e] * (feat[e] - dot) / tau (dl, grad_logits) over
// each piece, carrying each lane's compensated sum of the squares of what it wrote in
// carry[2 lid ..] (from zero at the first piece): segment_bwd's hub (WG 64: the dot by
// group_sum, dl and its lanes' squares by write_dl) or softmax_bwd_large (WG 256: tree_sum),
// the same bits.
//
// `hub_sq` (one invocation) finishes segment_bwd's sum of squares of the hub: lane 0's (sum,
// comp) in `carry` (the hub's lanes slot, after segment_bwd ran with d = 0: the squares of dl;
// with `first` every lane's starts from zero, as over the reverse index where nothing else adds
// to it) plus v * v of each column value of out's row, in column order, as segment_bwd's lane 0
// adds them.

struct HubParams {
    s: u32,      // the piece's first entry in the bound ranges
    t: u32,      // the end of the piece
    dim: u32,
    first: u32,  // 1: the lanes start from zero (the segment's first piece)
    last: u32,   // 1: reduce the lanes and write out (the segment's last piece)
    o_row: u32,  // the hub's row of out starts at float o_row of the bound out
    c0: u32,     // hub_columns: the first column of this dispatch (carry bound from its lanes on)
    gathered: u32,  // 1: entry r's row is row r of the bound feat (gathered), else index[r]
    tau: f32,    // hub_dl
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> P: HubParams;
@group(0) @binding(1) var<storage, read> values: array<f32>;
@group(0) @binding(2) var<storage, read> feat: array<f32>;
@group(0) @binding(3) var<storage, read_write> carry: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read> index: array<u32>;
@group(0) @binding(6) var<storage, read> dot_in: array<f32>;  // hub_dl: the dot at dot_in[2 WG]

var<workgroup> hp_a: array<f32, 256>;
var<workgroup> hp_b: array<f32, 256>;

// the WG lanes' compensated sums by the fixed tree (strides WG / 2, ..., 1): group_sum's and
// tree_sum's order; call from uniform control flow
fn lanes_sum(lid: u32, acc: vec2<f32>) -> f32 {
    hp_a[lid] = acc.x;
    hp_b[lid] = acc.y;
    workgroupBarrier();
    for (var st = WG / 2u; st > 0u; st = st >> 1u) {
        if (lid < st) {
            let m = kahan_merge(vec2<f32>(hp_a[lid], hp_b[lid]), vec2<f32>(hp_a[lid + st], hp_b[lid + st]));
            hp_a[lid] = m.x;
            hp_b[lid] = m.y;
        }
        workgroupBarrier();
    }
    return hp_a[0] - hp_b[0];
}

@compute @workgroup_size(WG)
fn hub_columns(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let cl = group_index(wid, nwg);
    let c = P.c0 + cl;
    if (c >= P.dim) {
        return;
    }
    let slot = 2u * (cl * WG + lid);
    var acc = vec2<f32>(0.0, 0.0);
    if (P.first == 0u) {
        acc = vec2<f32>(carry[slot], carry[slot + 1u]);
    }
    for (var r = P.s + lid; r < P.t; r = r + WG) {
        var row = r;
        if (P.gathered == 0u) {
            row = index[r];
        }
        acc = kahan_add(acc, values[r] * feat[row * P.dim + c]);
    }
    if (P.last == 0u) {
        carry[slot] = acc.x;
        carry[slot + 1u] = acc.y;
        return;
    }
    let v = lanes_sum(lid, acc);
    if (lid == 0u) {
        out[P.o_row + c] = v;
    }
}

@compute @workgroup_size(WG)
fn hub_sq(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    if (thread_index(gid, nwg) != 0u) {
        return;
    }
    var sq = vec2<f32>(carry[0], carry[1]);
    if (P.first != 0u) {
        for (var i = 2u; i < 128u; i = i + 1u) {
            carry[i] = 0.0;
        }
        sq = vec2<f32>(0.0, 0.0);
    }
    for (var c = 0u; c < P.dim; c = c + 1u) {
        let v = out[P.o_row + c];
        sq = kahan_add(sq, v * v);
    }
    carry[0] = sq.x;
    carry[1] = sq.y;
}

@compute @workgroup_size(WG)
fn hub_dot(@builtin(local_invocation_index) lid: u32) {
    var acc = vec2<f32>(0.0, 0.0);
    if (P.first == 0u) {
        acc = vec2<f32>(carry[2u * lid], carry[2u * lid + 1u]);
    }
    for (var e = P.s + lid; e < P.t; e = e + WG) {
        acc = kahan_add(acc, values[e] * feat[e]);
    }
    if (P.last == 0u) {
        carry[2u * lid] = acc.x;
        carry[2u * lid + 1u] = acc.y;
        return;
    }
    let v = lanes_sum(lid, acc);
    if (lid == 0u) {
        carry[2u * WG] = v;
    }
}

@compute @workgroup_size(WG)
fn hub_dl(@builtin(local_invocation_index) lid: u32) {
    let dot = dot_in[2u * WG];
    var sq = vec2<f32>(0.0, 0.0);
    if (P.first == 0u) {
        sq = vec2<f32>(carry[2u * lid], carry[2u * lid + 1u]);
    }
    for (var e = P.s + lid; e < P.t; e = e + WG) {
        let v = values[e] * (feat[e] - dot) / P.tau;
        out[e] = v;
        sq = kahan_add(sq, v * v);
    }
    carry[2u * lid] = sq.x;
    carry[2u * lid + 1u] = sq.y;
}
