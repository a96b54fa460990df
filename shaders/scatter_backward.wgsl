// scatter_backward.wgsl: gradients of energy_scatter (docs/definitions.md §4), gathers only (no atomics).
//
// grad_energies[b, j] = (active[b, j] ? alpha * sum_{e in segment j} pi[e] * g[b, col[e]] : 0)
//                       + (retain_sinks && sink[j] ? g[b, j] : 0)
//   * scatter_bwd_small: thread per (b, j) with out-degree <= small_max; compensated serial
//     sum in edge order.
//   * scatter_bwd_large: workgroup of 256 per (b, j) for the nodes in `large_nodes`
//     (out-degree > small_max); strided compensated partials and a fixed-order tree.
// grad_pi[e] = sum_b alpha * active[b, src[e]] * energies[b, src[e]] * g[b, col[e]]
//   * scatter_bwd_pi: thread per edge, compensated serial sum over b = 0, 1, ... in order;
//     with flags bit 2 the result is acc_in[e] + that sum (the gradient of earlier steps).

struct ScatterBwdParams {
    batch: u32,
    n_nodes: u32,
    flags: u32,      // bit 0: act_mask given; bit 1: retain_sinks; bit 2: scatter_bwd_pi adds acc_in
    n_large: u32,
    alpha: f32,
    small_max: u32,
    n_edges: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> P: ScatterBwdParams;
@group(0) @binding(1) var<storage, read> row_ptr: array<u32>;
@group(0) @binding(2) var<storage, read> col_idx: array<u32>;
@group(0) @binding(3) var<storage, read> pi: array<f32>;
@group(0) @binding(4) var<storage, read> grad_next: array<f32>;
@group(0) @binding(5) var<storage, read> act_mask: array<u32>;
@group(0) @binding(6) var<storage, read> sink: array<u32>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;
@group(0) @binding(8) var<storage, read> large_nodes: array<u32>;
@group(0) @binding(9) var<storage, read> src: array<u32>;
@group(0) @binding(10) var<storage, read> energies: array<f32>;
@group(0) @binding(11) var<storage, read> acc_in: array<f32>;

fn is_active(i: u32) -> bool {
    return (P.flags & 1u) == 0u || act_mask[i] != 0u;
}

fn finish_energy(i: u32, j: u32, total: f32) -> f32 {
    var r = 0.0;
    if (is_active(i)) {
        r = total * P.alpha;
    }
    if ((P.flags & 2u) != 0u && sink[j] != 0u) {
        r = r + grad_next[i];
    }
    return r;
}

@compute @workgroup_size(WG)
fn scatter_bwd_small(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = thread_index(gid, nwg);
    if (i >= P.batch * P.n_nodes) {
        return;
    }
    let b = i / P.n_nodes;
    let j = i - b * P.n_nodes;
    let s = row_ptr[j];
    let t = row_ptr[j + 1u];
    if (t - s > P.small_max) {
        return;
    }
    let row = b * P.n_nodes;
    var acc = vec2<f32>(0.0, 0.0);
    for (var e = s; e < t; e = e + 1u) {
        acc = kahan_add(acc, pi[e] * grad_next[row + col_idx[e]]);
    }
    out[i] = finish_energy(i, j, acc.x - acc.y);
}

@compute @workgroup_size(WG)
fn scatter_bwd_large(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // WG must be 256 (LWG) for this entry point.
    let g = group_index(wid, nwg);
    if (g >= P.n_large * P.batch) {
        return;
    }
    let b = g / P.n_large;
    let j = large_nodes[g - b * P.n_large];
    let s = row_ptr[j];
    let t = row_ptr[j + 1u];
    let row = b * P.n_nodes;
    var acc = vec2<f32>(0.0, 0.0);
    for (var e = s + lid; e < t; e = e + LWG) {
        acc = kahan_add(acc, pi[e] * grad_next[row + col_idx[e]]);
    }
    let total = tree_sum(lid, acc);
    if (lid == 0u) {
        let i = row + j;
        out[i] = finish_energy(i, j, total);
    }
}

@compute @workgroup_size(WG)
fn scatter_bwd_pi(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = thread_index(gid, nwg);
    if (e >= P.n_edges) {
        return;
    }
    let sj = src[e];
    let ck = col_idx[e];
    var acc = vec2<f32>(0.0, 0.0);
    for (var b = 0u; b < P.batch; b = b + 1u) {
        let row = b * P.n_nodes;
        var x = energies[row + sj] * P.alpha;
        if (!is_active(row + sj)) {
            x = 0.0;
        }
        acc = kahan_add(acc, x * grad_next[row + ck]);
    }
    var total = acc.x - acc.y;
    if ((P.flags & 4u) != 0u) {
        total = acc_in[e] + total;
    }
    out[e] = total;
}
