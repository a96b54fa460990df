// softmax_backward.wgsl: grad_logits[e] = pi[e] * (gpi[e] - dot_j) / tau with
// dot_j = sum_{e' in segment j} pi[e'] * gpi[e'] (docs/definitions.md §4; 0 on dropped edges since pi = 0).
//
// * softmax_bwd_small: thread per segment of degree 1..small_max; compensated serial dot.
// * softmax_bwd_large: workgroup of 256 per segment in `large_nodes` (degree > small_max);
//   strided compensated partials and a fixed-order tree.

struct SoftmaxBwdParams {
    n_nodes: u32,
    n_large: u32,
    small_max: u32,
    node0: u32,      // an edge window (edge_windows.py): its first source node ...
    tau: f32,
    n_count: u32,    // ... and its number of nodes (else 0 and n_nodes)
    ebase: u32,      // row_ptr[j] - ebase indexes the bound [E] ranges (a window; else 0)
    p_shift: u32,    // node j's pointers are row_ptr[j - p_shift], row_ptr[j + 1 - p_shift] (a node block; else 0)
}

@group(0) @binding(0) var<uniform> P: SoftmaxBwdParams;
@group(0) @binding(1) var<storage, read> row_ptr: array<u32>;
@group(0) @binding(2) var<storage, read> pi: array<f32>;
@group(0) @binding(3) var<storage, read> gpi: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read> large_nodes: array<u32>;

@compute @workgroup_size(WG)
fn softmax_bwd_small(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = thread_index(gid, nwg);
    if (i >= P.n_count) {
        return;
    }
    let j = P.node0 + i;
    let s = row_ptr[j - P.p_shift] - P.ebase;
    let t = row_ptr[j + 1u - P.p_shift] - P.ebase;
    if (t == s || t - s > P.small_max) {
        return;
    }
    var acc = vec2<f32>(0.0, 0.0);
    for (var e = s; e < t; e = e + 1u) {
        acc = kahan_add(acc, pi[e] * gpi[e]);
    }
    let dot = acc.x - acc.y;
    for (var e = s; e < t; e = e + 1u) {
        out[e] = pi[e] * (gpi[e] - dot) / P.tau;
    }
}

@compute @workgroup_size(WG)
fn softmax_bwd_large(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // WG must be 256 (LWG) for this entry point.
    let w = group_index(wid, nwg);
    if (w >= P.n_large) {
        return;
    }
    let j = large_nodes[w];
    let s = row_ptr[j - P.p_shift] - P.ebase;
    let t = row_ptr[j + 1u - P.p_shift] - P.ebase;
    var acc = vec2<f32>(0.0, 0.0);
    for (var e = s + lid; e < t; e = e + LWG) {
        acc = kahan_add(acc, pi[e] * gpi[e]);
    }
    let dot = tree_sum(lid, acc);
    for (var e = s + lid; e < t; e = e + LWG) {
        out[e] = pi[e] * (gpi[e] - dot) / P.tau;
    }
}
