// energy_scatter.wgsl: next[b, k] = sum over incoming edges e of k (reverse index order) of
// x[b, src[e]] * pi[e], with x = act ? energies * alpha : 0; plus energies[b, k] when
// retain_sinks and k is a sink. A gather over the reverse (CSC) index: no atomics.
//
// Batched state is node-major inside the scatter: xt [N, ceil(B/4)] vec4, element (b, j) at
// xt[j * nc4 + b / 4][b % 4], rows b >= B are 0 (every writer zeroes them). One node's batch
// row is contiguous, so the lanes of a gather read whole sectors. The active mask, when
// given, has the same layout (act_t, vec4<u32>).
//
// * scatter_transpose: energies [B, N] (and act_mask [B, N]) -> xt_out (and act_out).
// * scatter_small: thread per (k, chunk of 8 batch rows) with in-degree <= small_max (the
//   reverse index and pi are read once per 8 rows); serial sum per row in blocks of 16,
//   compensated across blocks.
// * scatter_large: workgroup of 256 per (b, k) for the nodes in `large_nodes` (in-degree >
//   small_max); strided compensated partial sums and a fixed-order tree.
// * scatter_rows: xt -> next_e [B, N] (a node-major state handed out in the public layout).
// Both scatter kernels write next_e node-major ([N, 4 ceil(B/4)] floats, flags bit 2) or
// [B, N] (the public layout). With flags bit 3 the reverse index is split (reverse_index.py):
// rev_pairs holds only the sources by target (u32 [E], read two per vec2) and pi is in
// reverse-index order (entry r's weight at pi[r]).
// A batch split into chunks (batch_chunks.py) runs these kernels once per chunk of rows: the
// [B, N] arrays (energies, act_mask, a [B, N] next_e) are bound from an aligned offset before
// the chunk's first row, which lies e0 elements into the bound range (0 when not split).
// A graph cut into edge windows (edge_windows.py) runs scatter_small / scatter_large once per
// window of targets node0 .. node0 + n_count, on its ranges of the split reverse index and of
// pi in reverse-index order (rev_ptr[k] - rbase indexes them).
// A target with more in-edges than one window holds (edge_windows.py: a big in-hub) has windows
// of its own, pieces of its range starting at multiples of 256 entries from its first:
// scatter_large_piece runs scatter_large's workgroup per (b, k) over one piece (entries rbase ..
// rbase + n_count of the bound ranges, k = node0), each lane's (acc, blk, nb) loaded from
// `carry` (unless the first piece) and stored back (unless the last, which finishes as
// scatter_large does): each lane meets its entries in the same order, the same bits.
// With flags bit 4 the state is in rows (batch_chunks.py, when not even 4 node-major rows of N
// fit one binding): xt and act_t are bound as the [B, N] rows themselves (element (b, j) at
// e0 + b * N + j, read as component (i & 3) of vec4 i >> 2), next_e is [B, N] too.
// With flags bit 5 one batch row of N is past one binding (wide_rows.py): each dispatch runs one
// row over one window of targets; scatter_gather first wrote each entry r's x (alpha * energies
// of its source, 0 where inactive: xrow's value) at r of the array bound as rev_pairs (read back
// as bits), so entry r is (r, r); xt and next_e are bound as the row's range of the window's
// nodes, node k at e0 + k (mod 2^32); `sink` is bound as the block of row_ptr (a sink has no
// out-edges).

struct ScatterParams {
    batch: u32,
    n_nodes: u32,
    flags: u32,      // bit 0: act mask given; bit 1: retain_sinks; bit 2: next_e node-major; bit 3: split index;
                     // bit 4: the state (xt, act_t) in [B, N] rows
    n_large: u32,
    alpha: f32,
    small_max: u32,
    e0: u32,         // element of the bound [B, N] ranges where row 0 starts (batch chunks)
    node0: u32,      // scatter_small / scatter_large: the first target node of this dispatch ...
    n_count: u32,    // ... and its number of nodes (a window of targets; else 0 and n_nodes)
    rbase: u32,      // rev_ptr[k] - rbase indexes the bound reverse-index ranges (a window; else 0)
    b0: u32,         // scatter_large_piece: the first batch row of this dispatch (carry bound from its lanes)
    piece: u32,      // scatter_large_piece: bit 0 the hub's first piece, bit 1 its last
    p_shift: u32,    // rev_ptr bound as a node block (graph_data.py): node k's pointer at k - p_shift
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> P: ScatterParams;
@group(0) @binding(1) var<storage, read> rev_ptr: array<u32>;
@group(0) @binding(2) var<storage, read> rev_pairs: array<vec2<u32>>;   // (edge, source) by target
@group(0) @binding(3) var<storage, read> pi: array<f32>;
@group(0) @binding(4) var<storage, read> energies: array<f32>;           // [B, N] (scatter_transpose)
@group(0) @binding(5) var<storage, read> act_mask: array<u32>;           // [B, N] (scatter_transpose)
@group(0) @binding(6) var<storage, read> sink: array<u32>;
@group(0) @binding(7) var<storage, read_write> next_e: array<f32>;
@group(0) @binding(8) var<storage, read> large_nodes: array<u32>;
@group(0) @binding(9) var<storage, read> xt: array<vec4<f32>>;           // node-major state
@group(0) @binding(10) var<storage, read_write> xt_out: array<vec4<f32>>;
@group(0) @binding(11) var<storage, read> act_t: array<vec4<u32>>;       // node-major mask
@group(0) @binding(12) var<storage, read_write> act_out: array<vec4<u32>>;
@group(0) @binding(13) var<storage, read_write> carry: array<vec4<f32>>;  // scatter_large_piece
fn n_chunks() -> u32 {
    return (P.batch + 3u) / 4u;
}

// the index of element (b, k) of next_e in its layout
fn out_index(b: u32, k: u32) -> u32 {
    if ((P.flags & 4u) != 0u) {
        return k * 4u * n_chunks() + b;
    }
    return P.e0 + b * P.n_nodes + k;
}

// x of row b of node j from a state in rows (flags bit 4): alpha * energies, 0 where inactive
// or b >= batch
fn xrow(b: u32, j: u32) -> f32 {
    if (b >= P.batch) {
        return 0.0;
    }
    let i = P.e0 + b * P.n_nodes + j;
    let x = xt[i >> 2u][i & 3u] * P.alpha;
    if ((P.flags & 1u) != 0u && act_t[i >> 2u][i & 3u] == 0u) {
        return 0.0;
    }
    return x;
}

// x of the 4 rows of chunk c of node j: alpha * energies, 0 where inactive
fn xval4(j: u32, c: u32) -> vec4<f32> {
    if ((P.flags & 32u) != 0u) {  // one row: j is the entry whose x was gathered
        return vec4<f32>(gathered_x(j), 0.0, 0.0, 0.0);
    }
    if ((P.flags & 16u) != 0u) {
        let b = 4u * c;
        return vec4<f32>(xrow(b, j), xrow(b + 1u, j), xrow(b + 2u, j), xrow(b + 3u, j));
    }
    let i = j * n_chunks() + c;
    let x = xt[i] * P.alpha;
    if ((P.flags & 1u) != 0u) {
        return select(vec4<f32>(0.0), x, act_t[i] != vec4<u32>(0u));
    }
    return x;
}

// the value stored at (b, k): total, plus the node's own energy for a retained sink
fn finish(b: u32, k: u32, total: f32) -> f32 {
    if ((P.flags & 2u) != 0u && is_sink(k)) {
        if ((P.flags & 16u) != 0u) {
            let i = P.e0 + b * P.n_nodes + k;
            return total + xt[i >> 2u][i & 3u];
        }
        return total + xt[k * n_chunks() + b / 4u][b % 4u];
    }
    return total;
}

// node k has no out-edges: sink[k], or on one row past a binding (flags bit 5) its row_ptr
// (bound as `sink`) pointers equal
fn is_sink(k: u32) -> bool {
    if ((P.flags & 32u) != 0u) {
        return sink[k + 1u - P.p_shift] == sink[k - P.p_shift];
    }
    return sink[k] != 0u;
}

// the gathered x of entry r (flags bit 5): the word r of the array bound as rev_pairs
fn gathered_x(r: u32) -> f32 {
    return bitcast<f32>(rev_pairs[r >> 1u][r & 1u]);
}

// entry r of the reverse index as (index into pi, source): rev_pairs[r], or on the split index
// (flags bit 3) r and the r-th source; (r, r) with gathered values (flags bit 5)
fn rev_entry(r: u32) -> vec2<u32> {
    if ((P.flags & 32u) != 0u) {
        return vec2<u32>(r, r);
    }
    if ((P.flags & 8u) == 0u) {
        return rev_pairs[r];
    }
    let two = rev_pairs[r >> 1u];
    return vec2<u32>(r, select(two.x, two.y, (r & 1u) != 0u));
}

// ---------------------------------------------------------------- layout
// energies[b, j] for one batch row b (0 when b >= batch)
fn row_value(b: u32, j: u32) -> f32 {
    if (b >= P.batch) {
        return 0.0;
    }
    return energies[P.e0 + b * P.n_nodes + j];
}

fn row_active(b: u32, j: u32) -> u32 {
    if (b >= P.batch) {
        return 0u;
    }
    return select(0u, 1u, act_mask[P.e0 + b * P.n_nodes + j] != 0u);
}

// thread i: chunk c = i / n_nodes of 4 rows, node j = i mod n_nodes (reads along rows)
@compute @workgroup_size(WG)
fn scatter_transpose(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = thread_index(gid, nwg);
    let nc4 = n_chunks();
    if (i >= nc4 * P.n_nodes) {
        return;
    }
    let c = i / P.n_nodes;
    let j = i - c * P.n_nodes;
    let b0 = c * 4u;
    xt_out[j * nc4 + c] = vec4<f32>(row_value(b0, j), row_value(b0 + 1u, j), row_value(b0 + 2u, j),
                                    row_value(b0 + 3u, j));
    if ((P.flags & 1u) != 0u) {
        act_out[j * nc4 + c] = vec4<u32>(row_active(b0, j), row_active(b0 + 1u, j), row_active(b0 + 2u, j),
                                         row_active(b0 + 3u, j));
    }
}

// thread i = b * n_nodes + j: next_e[b, j] = xt[j, b] (reads along nodes: writes coalesce)
@compute @workgroup_size(WG)
fn scatter_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = thread_index(gid, nwg);
    if (i >= P.batch * P.n_nodes) {
        return;
    }
    let b = i / P.n_nodes;
    let j = i - b * P.n_nodes;
    next_e[P.e0 + i] = xt[j * n_chunks() + b / 4u][b % 4u];
}

// ---------------------------------------------------------------- small in-degrees
// the 4 rows of chunk c4 of node k; node-major output also gets 0 in rows >= batch
fn store_rows(c4: u32, k: u32, total: vec4<f32>) {
    let nm = (P.flags & 4u) != 0u;
    for (var l = 0u; l < 4u; l = l + 1u) {
        let b = 4u * c4 + l;
        if (b < P.batch) {
            next_e[out_index(b, k)] = finish(b, k, total[l]);
        } else if (nm) {
            next_e[out_index(b, k)] = 0.0;
        }
    }
}

// scatter_small: thread per (chunk of 8 batch rows, node k): thread i takes node
// k = i mod n_nodes and rows 8c .. 8c+7 (c = i / n_nodes) as two vec4 of xt, so the reverse
// index and pi are read once per 8 rows. Each lane does exactly the per-(b, k) sum: blocks
// of 16 in reverse-index order, block sums compensated (Kahan). For a hub (in-degree >
// small_max, summed by scatter_large) it only zeroes the padding rows of a node-major output.
@compute @workgroup_size(WG)
fn scatter_small(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = thread_index(gid, nwg);
    let nc4 = n_chunks();
    let nc8 = (P.batch + 7u) / 8u;
    if (i >= nc8 * P.n_count) {
        return;
    }
    let c = i / P.n_count;
    let k = P.node0 + i - c * P.n_count;
    let c4 = 2u * c;
    let two = c4 + 1u < nc4;  // false only in the last chunk when ceil(B/4) is odd
    let s = rev_ptr[k - P.p_shift] - P.rbase;
    let t = rev_ptr[k + 1u - P.p_shift] - P.rbase;
    if (t - s > P.small_max) {
        if ((P.flags & 4u) != 0u) {
            for (var b = max(8u * c, P.batch); b < 4u * min(c4 + 2u, nc4); b = b + 1u) {
                next_e[out_index(b, k)] = 0.0;
            }
        }
        return;
    }
    var sum_a = vec4<f32>(0.0);
    var comp_a = vec4<f32>(0.0);
    var blk_a = vec4<f32>(0.0);
    var sum_b = vec4<f32>(0.0);
    var comp_b = vec4<f32>(0.0);
    var blk_b = vec4<f32>(0.0);
    // two edges per iteration (independent loads in flight), then the same sequential sums
    var r = s;
    for (; r + 1u < t; r = r + 2u) {
        let pair0 = rev_entry(r);
        let pair1 = rev_entry(r + 1u);
        let p0 = pi[pair0.x];
        let p1 = pi[pair1.x];
        let xa0 = xval4(pair0.y, c4);
        let xa1 = xval4(pair1.y, c4);
        var xb0 = vec4<f32>(0.0);
        var xb1 = vec4<f32>(0.0);
        if (two) {
            xb0 = xval4(pair0.y, c4 + 1u);
            xb1 = xval4(pair1.y, c4 + 1u);
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
        let pair = rev_entry(r);
        let p = pi[pair.x];
        blk_a = blk_a + xval4(pair.y, c4) * p;
        if (two) {
            blk_b = blk_b + xval4(pair.y, c4 + 1u) * p;
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
    store_rows(c4, k, sum_a - comp_a);
    if (two) {
        store_rows(c4 + 1u, k, sum_b - comp_b);
    }
}

// ---------------------------------------------------------------- large in-degrees
// one lane's share of row l of chunk c over entries r0, r0 + LWG, ... < t: blocks of 16 products
// (blk, its count nb) added to the compensated sum acc as each fills
fn lane_sum(r0: u32, t: u32, c: u32, l: u32, acc: ptr<function, vec2<f32>>, blk: ptr<function, f32>,
            nb: ptr<function, u32>) {
    for (var r = r0; r < t; r = r + LWG) {
        let pair = rev_entry(r);
        *blk = *blk + xval4(pair.y, c)[l] * pi[pair.x];
        *nb = *nb + 1u;
        if (*nb == 16u) {
            *acc = kahan_add(*acc, *blk);
            *blk = 0.0;
            *nb = 0u;
        }
    }
}

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
    let s = rev_ptr[k - P.p_shift] - P.rbase;
    let t = rev_ptr[k + 1u - P.p_shift] - P.rbase;
    let c = b / 4u;
    let l = b % 4u;
    var acc = vec2<f32>(0.0, 0.0);
    var blk = 0.0;
    var nb = 0u;
    lane_sum(s + lid, t, c, l, &acc, &blk, &nb);
    acc = kahan_add(acc, blk);
    let total = tree_sum(lid, acc);
    if (lid == 0u) {
        next_e[out_index(b, k)] = finish(b, k, total);
    }
}

// scatter_large over one piece of a big in-hub (see the top): workgroup b - b0 of the dispatch
@compute @workgroup_size(WG)
fn scatter_large_piece(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // WG must be 256 (LWG) for this entry point.
    let b = P.b0 + group_index(wid, nwg);
    if (b >= P.batch) {
        return;
    }
    let k = P.node0;
    let c = b / 4u;
    let l = b % 4u;
    let slot = (b - P.b0) * LWG + lid;
    var acc = vec2<f32>(0.0, 0.0);
    var blk = 0.0;
    var nb = 0u;
    if ((P.piece & 1u) == 0u) {
        let v = carry[slot];
        acc = v.xy;
        blk = v.z;
        nb = bitcast<u32>(v.w);
    }
    lane_sum(P.rbase + lid, P.rbase + P.n_count, c, l, &acc, &blk, &nb);
    if ((P.piece & 2u) == 0u) {
        carry[slot] = vec4<f32>(acc, blk, bitcast<f32>(nb));
        return;
    }
    acc = kahan_add(acc, blk);
    let total = tree_sum(lid, acc);
    if (lid == 0u) {
        next_e[out_index(b, k)] = finish(b, k, total);
    }
}

// ---------------------------------------------------------------- one row past a binding
// scatter_gather (wide_rows.py): thread t < n_count takes entry r = rbase + t of the index bound
// as rev_pairs (flags bit 3: u32 node ids); when its node j lies in the bound block of nodes
// node0 .. node0 + n_large (energies, act_mask: node j at e0 + j, mod 2^32), writes its value at
// next_e[r]: with flags bit 1 xrow's x (energies * alpha, 0 where act_mask is 0 with flags bit 0),
// with bit 2 act_mask's word as 1.0 or 0.0 (read as a u32 mask: nonzero where active), else
// the word itself. One dispatch per node block fills every entry once (exact values).
@compute @workgroup_size(WG)
fn scatter_gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = thread_index(gid, nwg);
    if (t >= P.n_count) {
        return;
    }
    let r = P.rbase + t;
    let j = rev_entry(r).y;
    if (j - P.node0 >= P.n_large) {
        return;
    }
    if ((P.flags & 4u) != 0u) {
        next_e[r] = select(0.0, 1.0, act_mask[P.e0 + j] != 0u);
        return;
    }
    var x = energies[P.e0 + j];
    if ((P.flags & 2u) != 0u) {
        x = x * P.alpha;
        if ((P.flags & 1u) != 0u && act_mask[P.e0 + j] == 0u) {
            x = 0.0;
        }
    }
    next_e[r] = x;
}
