// energy_scatter.wgsl: next[b, k] = sum over incoming edges e of k (reverse index order) of
// x[b, src[e]] * pi[e], with x = act_mask ? energies * alpha : 0; plus energies[b, k] when
// retain_sinks and k is a sink. A gather over the reverse (CSC) index: no atomics.
//
// Two in-degree classes, chosen on the host:
// * scatter_transpose + scatter_small: x transposed to [N, ceil(B/4)] vec4, then thread per
//   (k, chunk of 8 batch rows) with in-degree <= small_max (the reverse index and pi are read
//   once per 8 rows, x[., src] is one cache line); serial sum per row in blocks of 16,
//   compensated across blocks.
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

// ---------------------------------------------------------------- small in-degrees
// The gather reads x[b, src] for every batch row of every incoming edge. With energies laid
// out [B, N] that is B cache lines per edge; scatter_transpose first writes
// xt[j, b] = x[b, j] (alpha and the active mask applied) as [N, ceil(B/4)] vec4, so one
// edge's rows are adjacent (one cache line for B <= 16).
@group(0) @binding(9) var<storage, read> xt: array<vec4<f32>>;
@group(0) @binding(10) var<storage, read_write> xt_out: array<vec4<f32>>;

// x[b, j] for one batch row b (0 when b >= batch or j is inactive)
fn xval(b: u32, j0: u32) -> f32 {
    if (b >= P.batch) {
        return 0.0;
    }
    let j = b * P.n_nodes + j0;
    var x = energies[j] * P.alpha;
    if ((P.flags & 1u) != 0u && act_mask[j] == 0u) {
        x = 0.0;
    }
    return x;
}

// thread i: chunk c = i / n_nodes of 4 rows, node j = i mod n_nodes (reads along rows)
@compute @workgroup_size(WG)
fn scatter_transpose(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = thread_index(gid, nwg);
    let nc4 = (P.batch + 3u) / 4u;
    if (i >= nc4 * P.n_nodes) {
        return;
    }
    let c = i / P.n_nodes;
    let j = i - c * P.n_nodes;
    let b0 = c * 4u;
    xt_out[j * nc4 + c] = vec4<f32>(xval(b0, j), xval(b0 + 1u, j), xval(b0 + 2u, j), xval(b0 + 3u, j));
}

fn kahan4(sum: ptr<function, vec4<f32>>, comp: ptr<function, vec4<f32>>, x: vec4<f32>) {
    let y = x - *comp;
    let t = *sum + y;
    *comp = (t - *sum) - y;
    *sum = t;
}

fn store_rows(b0: u32, k: u32, total: vec4<f32>) {
    for (var l = 0u; l < 4u; l = l + 1u) {
        let b = b0 + l;
        if (b < P.batch) {
            let o = b * P.n_nodes + k;
            next_e[o] = finish(o, k, total[l]);
        }
    }
}

// scatter_small: thread per (chunk of 8 batch rows, node k): thread i takes node
// k = i mod n_nodes and rows 8c .. 8c+7 (c = i / n_nodes) as two vec4 of xt, so the reverse
// index and pi are read once per 8 rows. Each lane does exactly the per-(b, k) sum: blocks
// of 16 in reverse-index order, block sums compensated (Kahan).
@compute @workgroup_size(WG)
fn scatter_small(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = thread_index(gid, nwg);
    let nc4 = (P.batch + 3u) / 4u;
    let nc8 = (P.batch + 7u) / 8u;
    if (i >= nc8 * P.n_nodes) {
        return;
    }
    let c = i / P.n_nodes;
    let k = i - c * P.n_nodes;
    let s = rev_ptr[k];
    let t = rev_ptr[k + 1u];
    if (t - s > P.small_max) {
        return;
    }
    let c4 = 2u * c;
    let two = c4 + 1u < nc4;  // false only in the last chunk when ceil(B/4) is odd
    var sum_a = vec4<f32>(0.0);
    var comp_a = vec4<f32>(0.0);
    var blk_a = vec4<f32>(0.0);
    var sum_b = vec4<f32>(0.0);
    var comp_b = vec4<f32>(0.0);
    var blk_b = vec4<f32>(0.0);
    // two edges per iteration (independent loads in flight), then the same sequential sums
    var r = s;
    for (; r + 1u < t; r = r + 2u) {
        let pair0 = rev_pairs[r];
        let pair1 = rev_pairs[r + 1u];
        let p0 = pi[pair0.x];
        let p1 = pi[pair1.x];
        let base0 = pair0.y * nc4 + c4;
        let base1 = pair1.y * nc4 + c4;
        let xa0 = xt[base0];
        let xa1 = xt[base1];
        var xb0 = vec4<f32>(0.0);
        var xb1 = vec4<f32>(0.0);
        if (two) {
            xb0 = xt[base0 + 1u];
            xb1 = xt[base1 + 1u];
        }
        blk_a = blk_a + xa0 * p0;
        blk_b = blk_b + xb0 * p0;
        if (((r - s) & 15u) == 15u) {
            kahan4(&sum_a, &comp_a, blk_a);
            kahan4(&sum_b, &comp_b, blk_b);
            blk_a = vec4<f32>(0.0);
            blk_b = vec4<f32>(0.0);
        }
        blk_a = blk_a + xa1 * p1;
        blk_b = blk_b + xb1 * p1;
        if (((r + 1u - s) & 15u) == 15u) {
            kahan4(&sum_a, &comp_a, blk_a);
            kahan4(&sum_b, &comp_b, blk_b);
            blk_a = vec4<f32>(0.0);
            blk_b = vec4<f32>(0.0);
        }
    }
    if (r < t) {
        let pair = rev_pairs[r];
        let p = pi[pair.x];
        let base = pair.y * nc4 + c4;
        blk_a = blk_a + xt[base] * p;
        if (two) {
            blk_b = blk_b + xt[base + 1u] * p;
        }
        if (((r - s) & 15u) == 15u) {
            kahan4(&sum_a, &comp_a, blk_a);
            kahan4(&sum_b, &comp_b, blk_b);
            blk_a = vec4<f32>(0.0);
            blk_b = vec4<f32>(0.0);
        }
    }
    kahan4(&sum_a, &comp_a, blk_a);
    kahan4(&sum_b, &comp_b, blk_b);
    store_rows(8u * c, k, sum_a - comp_a);
    if (two) {
        store_rows(8u * c + 4u, k, sum_b - comp_b);
    }
}

// ---------------------------------------------------------------- large in-degrees
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
    let total = tree_sum(lid, acc);
    if (lid == 0u) {
        let i = row + k;
        next_e[i] = finish(i, k, total);
    }
}
