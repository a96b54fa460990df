// logits_backward.wgsl: grad_q and grad_k of edge_logits (docs/definitions.md §4), gathers only.
//
// One pair of entry points serves both gradients through an index "list":
//   mode 0 (grad_q): node j's list is its CSR segment, entries e in [seg_ptr[j], seg_ptr[j+1]):
//                    edge = e, other = col_idx[e]                (idx = col_idx)
//   mode 1 (grad_k): node n's list is its reverse-index range r in [seg_ptr[n], seg_ptr[n+1]):
//                    edge = pairs[r].x, other = pairs[r].y = src  (idx = rev_pairs, flat)
// out[j, c] = sum over the list of grad_logits[edge] * feat[other, c]   (feat = k or q)
//
// * logits_bwd_small: thread per (j, c) for lists of length <= small_max; compensated serial sum.
// * logits_bwd_large: workgroup of 256 per (j, c) for j in `large_nodes`; strided partials and
//   a fixed-order tree.

struct LogitsBwdParams {
    n_nodes: u32,
    dim: u32,
    mode: u32,
    n_large: u32,
    small_max: u32,
    node0: u32,      // an edge window (edge_windows.py): its first node ...
    n_count: u32,    // ... and its number of nodes (else 0 and n_nodes)
    ebase: u32,      // seg_ptr[j] - ebase indexes the bound per-entry ranges (a window; else 0)
    gathered: u32,   // 1 (mode 0): entry r's feat row is row r of the bound feat (node_rows.py)
    o_shift: u32,    // out's row j starts at float j * dim - o_shift (mod 2^32; out bound from a node range)
    p_shift: u32,    // node j's pointers are seg_ptr[j - p_shift], seg_ptr[j + 1 - p_shift] (a node block; else 0)
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> P: LogitsBwdParams;
@group(0) @binding(1) var<storage, read> seg_ptr: array<u32>;
@group(0) @binding(2) var<storage, read> idx: array<u32>;
@group(0) @binding(3) var<storage, read> grad_logits: array<f32>;
@group(0) @binding(4) var<storage, read> feat: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read> large_nodes: array<u32>;

fn term(r: u32, c: u32) -> f32 {
    var edge = r;
    var other = 0u;
    if (P.mode == 0u) {
        other = idx[r];
        if (P.gathered != 0u) {
            other = r;
        }
    } else {
        edge = idx[2u * r];
        other = idx[2u * r + 1u];
    }
    return grad_logits[edge] * feat[other * P.dim + c];
}

@compute @workgroup_size(WG)
fn logits_bwd_small(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = thread_index(gid, nwg);
    if (i >= P.n_count * P.dim) {
        return;
    }
    let jl = i / P.dim;
    let c = i - jl * P.dim;
    let j = P.node0 + jl;
    let s = seg_ptr[j - P.p_shift] - P.ebase;
    let t = seg_ptr[j + 1u - P.p_shift] - P.ebase;
    if (t - s > P.small_max) {
        return;
    }
    var acc = vec2<f32>(0.0, 0.0);
    for (var r = s; r < t; r = r + 1u) {
        acc = kahan_add(acc, term(r, c));
    }
    out[j * P.dim - P.o_shift + c] = acc.x - acc.y;
}

@compute @workgroup_size(WG)
fn logits_bwd_large(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // WG must be 256 (LWG) for this entry point.
    let g = group_index(wid, nwg);
    if (g >= P.n_large * P.dim) {
        return;
    }
    let w = g / P.dim;
    let c = g - w * P.dim;
    let j = large_nodes[w];
    let s = seg_ptr[j - P.p_shift] - P.ebase;
    let t = seg_ptr[j + 1u - P.p_shift] - P.ebase;
    var acc = vec2<f32>(0.0, 0.0);
    for (var r = s + lid; r < t; r = r + LWG) {
        acc = kahan_add(acc, term(r, c));
    }
    let total = tree_sum(lid, acc);
    if (lid == 0u) {
        out[j * P.dim - P.o_shift + c] = total;
    }
}
