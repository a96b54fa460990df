// energy_scatter.wgsl: next[b, k] = sum over incoming edges e of k (reverse index order) of
// x[b, src[e]] * pi[e], with x = act_mask ? energies * alpha : 0; plus energies[b, k] when
// retain_sinks and k is a sink. A gather over the reverse (CSC) index: no atomics.
//
// Two in-degree classes, chosen on the host:
// * scatter_small: thread per (b, k) with in-degree <= small_max; serial sum in blocks of 16, compensated across blocks.
// * scatter_large: workgroup of 256 per (b, k) for the nodes in `large_nodes` (in-degree >
//   small_max); strided compensated partial sums and a fixed-order tree.

struct ScatterParams {
    batch: u32,
    n_nodes: u32,
    flags: u32,      // bit 0: act_mask given; bit 1: retain_sinks
    n_large: u32,
    alpha: f32,
    small_max: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> P: ScatterParams;
@group(0) @binding(1) var<storage, read> rev_ptr: array<u32>;
@group(0) @binding(2) var<storage, read> rev_pairs: array<vec2<u32>>;   // (edge, source) by target
@group(0) @binding(3) var<storage, read> pi: array<f32>;
@group(0) @binding(4) var<storage, read> energies: array<f32>;
@group(0) @binding(5) var<storage, read> act_mask: array<u32>;
@group(0) @binding(6) var<storage, read> sink: array<u32>;
@group(0) @binding(7) var<storage, read_write> next_e: array<f32>;
@group(0) @binding(8) var<storage, read> large_nodes: array<u32>;

fn contribution(row: u32, pair: vec2<u32>) -> f32 {
    let j = row + pair.y;
    var x = energies[j] * P.alpha;
    if ((P.flags & 1u) != 0u && act_mask[j] == 0u) {
        x = 0.0;
    }
    return x * pi[pair.x];
}

fn finish(i: u32, k: u32, total: f32) -> f32 {
    if ((P.flags & 2u) != 0u && sink[k] != 0u) {
        return total + energies[i];
    }
    return total;
}

@compute @workgroup_size(WG)
fn scatter_small(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = thread_index(gid, nwg);
    if (i >= P.batch * P.n_nodes) {
        return;
    }
    let b = i / P.n_nodes;
    let k = i - b * P.n_nodes;
    let s = rev_ptr[k];
    let t = rev_ptr[k + 1u];
    if (t - s > P.small_max) {
        return;
    }
    let row = b * P.n_nodes;
    var acc = vec2<f32>(0.0, 0.0);
    var blk = 0.0;
    for (var r = s; r < t; r = r + 1u) {
        blk = blk + contribution(row, rev_pairs[r]);
        if (((r - s) & 15u) == 15u) {
            acc = kahan_add(acc, blk);
            blk = 0.0;
        }
    }
    acc = kahan_add(acc, blk);
    next_e[i] = finish(i, k, acc.x - acc.y);
}

const LWG: u32 = 256u;
var<workgroup> red_a: array<f32, 256>;
var<workgroup> red_b: array<f32, 256>;

@compute @workgroup_size(WG)
fn scatter_large(
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
    let k = large_nodes[g - b * P.n_large];
    let s = rev_ptr[k];
    let t = rev_ptr[k + 1u];
    let row = b * P.n_nodes;
    var acc = vec2<f32>(0.0, 0.0);
    var blk = 0.0;
    var nb = 0u;
    for (var r = s + lid; r < t; r = r + LWG) {
        blk = blk + contribution(row, rev_pairs[r]);
        nb = nb + 1u;
        if (nb == 16u) {
            acc = kahan_add(acc, blk);
            blk = 0.0;
            nb = 0u;
        }
    }
    acc = kahan_add(acc, blk);
    red_a[lid] = acc.x;
    red_b[lid] = acc.y;
    workgroupBarrier();
    for (var st = LWG / 2u; st > 0u; st = st >> 1u) {
        if (lid < st) {
            let m = kahan_merge(vec2<f32>(red_a[lid], red_b[lid]), vec2<f32>(red_a[lid + st], red_b[lid + st]));
            red_a[lid] = m.x;
            red_b[lid] = m.y;
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let i = row + k;
        next_e[i] = finish(i, k, red_a[0] - red_b[0]);
    }
}
