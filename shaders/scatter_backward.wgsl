// scatter_backward.wgsl: gradients of energy_scatter (docs/definitions.md §4), gathers only (no atomics).
//
// grad_energies[b, j] = (active[b, j] ? alpha * sum_{e in segment j} pi[e] * g[b, col[e]] : 0)
//                       + (retain_sinks && sink[j] ? g[b, j] : 0)
//   * scatter_bwd_small: thread per (j, chunk of 8 batch rows) with out-degree <= small_max;
//     compensated serial sum per row in edge order.
//   * scatter_bwd_large: workgroup of 256 per (b, j) for the nodes in `large_nodes`
//     (out-degree > small_max); strided compensated partials and a fixed-order tree.
// grad_pi[e] = sum_b alpha * active[b, src[e]] * energies[b, src[e]] * g[b, col[e]]
//   * scatter_bwd_pi: thread per edge, rows loaded 4 at a time, one compensated sum over
//     b = 0, 1, ... in order; with flags bit 2 the result is acc_in[e] + that sum (the
//     gradient of earlier steps). A batch split into chunks (batch_chunks.py) runs it (or
//     scatter_bwd_pi_nm) once per chunk of rows, in row order, carrying the running
//     compensated sum (sum, comp) in out[e], carry_comp[e]: flags bit 6 resumes from it,
//     bit 7 stores it instead of the result (every chunk but the last), so the sum is the
//     unsplit one.
//   The [B, N] arrays are bound from an aligned offset before the chunk's first row, which
//   lies e0 elements into the bound range (0 when not split).
//
// Layouts: the state (energies and act_mask), grad_next and out are each [B, N] or node-major
// (element (b, j) at j * 4 ceil(B/4) + b, rows b >= B zero), by flags bits 3, 4, 5. Node-major,
// one lane's 4 rows are 16 contiguous bytes, so a gather over a node's rows uses whole sectors.
//
// With flags bit 8 one batch row of N is past one binding (wide_rows.py): each dispatch runs one
// row (batch = 1) over one edge window; scatter_gather first wrote grad_next at each edge's
// target at the edge's place of the array bound as col_idx (read back as bits: grad_edge), the
// window's sources' ranges of energies, act_mask, grad_next and out are bound with node j at
// e0 + j (mod 2^32), `sink` is bound as the block of row_ptr (a sink has no out-edges), and
// grad_pi's sum over the rows is carried from row to row as batch chunks carry it (bits 6, 7).

struct ScatterBwdParams {
    batch: u32,
    n_nodes: u32,
    flags: u32,      // bit 0: act_mask given; bit 1: retain_sinks; bit 2: scatter_bwd_pi adds acc_in;
                     // node-major: bit 3 energies and act_mask, bit 4 grad_next, bit 5 out;
                     // scatter_bwd_pi carry: bit 6 resume from out, bit 7 store to out
    n_large: u32,
    alpha: f32,
    small_max: u32,
    n_edges: u32,
    e0: u32,         // element of the bound [B, N] ranges where row 0 starts (batch chunks)
    node0: u32,      // scatter_bwd_small: the first source node of this dispatch ...
    n_count: u32,    // ... and its number of nodes (an edge window's sources; else 0 and n_nodes)
    ebase: u32,      // row_ptr[j] - ebase indexes the bound [E] ranges (an edge window; else 0)
    eoff: u32,       // scatter_bwd_pi(_nm): edge t of the dispatch is element eoff + t of them
    b0: u32,         // scatter_bwd_large_piece: the first batch row of this dispatch's group
    ps: u32,         //   the piece's entries ps .. pt of the bound ranges
    pt: u32,
    piece: u32,      //   bit 0: the hub's first piece, bit 1: its last
    p_shift: u32,    // row_ptr bound as a node block (graph_data.py): node j's pointer at j - p_shift
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
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
@group(0) @binding(12) var<storage, read_write> carry_comp: array<f32>;  // [E]: batch chunks' compensations
@group(0) @binding(13) var<storage, read_write> lanes: array<f32>;  // scatter_bwd_large_piece's carry
// the same bindings read 4 rows at a time, for scatter_bwd_pi_nm (node-major data only: a
// node's rows 4c .. 4c+3 are one vec4)
@group(0) @binding(5) var<storage, read> act_mask4: array<vec4<u32>>;
@group(0) @binding(10) var<storage, read> energies4: array<vec4<f32>>;

// the index of element (b, j) in the layout selected by `bit`
fn at(b: u32, j: u32, bit: u32) -> u32 {
    if ((P.flags & bit) != 0u) {
        return j * 4u * ((P.batch + 3u) / 4u) + b;
    }
    return P.e0 + b * P.n_nodes + j;
}

fn is_active(b: u32, j: u32) -> bool {
    return (P.flags & 1u) == 0u || act_mask[at(b, j, 8u)] != 0u;
}

fn grad_at(b: u32, j: u32) -> f32 {
    return grad_next[at(b, j, 16u)];
}

// grad_next of row b at the target of edge e: gathered at e (flags bit 8), else at col_idx[e]
fn grad_edge(b: u32, e: u32) -> f32 {
    if ((P.flags & 256u) != 0u) {
        return bitcast<f32>(col_idx[e]);
    }
    return grad_at(b, col_idx[e]);
}

// grad4 at the target of edge e (one row, gathered, with flags bit 8)
fn grad_edge4(c: u32, e: u32) -> vec4<f32> {
    if ((P.flags & 256u) != 0u) {
        return vec4<f32>(bitcast<f32>(col_idx[e]), 0.0, 0.0, 0.0);
    }
    return grad4(c, col_idx[e]);
}

// node j has no out-edges: sink[j], or with flags bit 8 its row_ptr (bound as `sink`) pointers equal
fn is_sink(j: u32) -> bool {
    if ((P.flags & 256u) != 0u) {
        return sink[j + 1u - P.p_shift] == sink[j - P.p_shift];
    }
    return sink[j] != 0u;
}

// grad_next of rows 4c .. 4c+3 of node j (0 in rows >= batch)
fn grad4(c: u32, j: u32) -> vec4<f32> {
    let b = 4u * c;
    if ((P.flags & 16u) != 0u) {
        let o = at(b, j, 16u);
        return vec4<f32>(grad_next[o], grad_next[o + 1u], grad_next[o + 2u], grad_next[o + 3u]);
    }
    // straight-line, no loop (llvmpipe caps an invocation's loop iterations: loop_cap.py)
    var g = vec4<f32>(0.0);
    if (b < P.batch) {
        g.x = grad_next[at(b, j, 16u)];
    }
    if (b + 1u < P.batch) {
        g.y = grad_next[at(b + 1u, j, 16u)];
    }
    if (b + 2u < P.batch) {
        g.z = grad_next[at(b + 2u, j, 16u)];
    }
    if (b + 3u < P.batch) {
        g.w = grad_next[at(b + 3u, j, 16u)];
    }
    return g;
}

// alpha * active * energies of rows 4c .. 4c+3 of node j (0 in rows >= batch)
fn x4(c: u32, j: u32) -> vec4<f32> {
    let b = 4u * c;
    if ((P.flags & 8u) != 0u) {
        let o = at(b, j, 8u);
        let x = vec4<f32>(energies[o], energies[o + 1u], energies[o + 2u], energies[o + 3u]) * P.alpha;
        if ((P.flags & 1u) != 0u) {
            let a = vec4<u32>(act_mask[o], act_mask[o + 1u], act_mask[o + 2u], act_mask[o + 3u]);
            return select(vec4<f32>(0.0), x, a != vec4<u32>(0u));
        }
        return x;
    }
    // straight-line, no loop (as grad4)
    return vec4<f32>(x1(b, j), x1(b + 1u, j), x1(b + 2u, j), x1(b + 3u, j));
}

// alpha * active * energies of row b of node j in the [B, N] layout (0 for b >= batch)
fn x1(b: u32, j: u32) -> f32 {
    if (b >= P.batch) {
        return 0.0;
    }
    let i = at(b, j, 8u);
    if ((P.flags & 1u) != 0u && act_mask[i] == 0u) {
        return 0.0;
    }
    return energies[i] * P.alpha;
}

fn finish_energy(b: u32, j: u32, total: f32) -> f32 {
    var r = 0.0;
    if (is_active(b, j)) {
        r = total * P.alpha;
    }
    if ((P.flags & 2u) != 0u && is_sink(j)) {
        r = r + grad_at(b, j);
    }
    return r;
}

// rows 4c .. 4c+3 of node j: finished totals below batch, 0 in the padding of a node-major out
fn store4(c: u32, j: u32, total: vec4<f32>, only_padding: bool) {
    let nm = (P.flags & 32u) != 0u;
    for (var l = 0u; l < 4u; l = l + 1u) {
        let b = 4u * c + l;
        if (b < P.batch) {
            if (!only_padding) {
                out[at(b, j, 32u)] = finish_energy(b, j, total[l]);
            }
        } else if (nm) {
            out[at(b, j, 32u)] = 0.0;
        }
    }
}

// thread i: node j = i mod n_nodes, rows 8c .. 8c+7 (c = i / n_nodes) as two chunks of 4, so
// the CSR segment and pi are read once per 8 rows (node-major: one 32-byte run per neighbour)
@compute @workgroup_size(WG)
fn scatter_bwd_small(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = thread_index(gid, nwg);
    let nc4 = (P.batch + 3u) / 4u;
    let nc8 = (P.batch + 7u) / 8u;
    if (i >= nc8 * P.n_count) {
        return;
    }
    let c = i / P.n_count;
    let j = P.node0 + i - c * P.n_count;
    let c4 = 2u * c;
    let two = c4 + 1u < nc4;  // false only in the last chunk when ceil(B/4) is odd
    let s = row_ptr[j - P.p_shift] - P.ebase;
    let t = row_ptr[j + 1u - P.p_shift] - P.ebase;
    var sum_a = vec4<f32>(0.0);
    var comp_a = vec4<f32>(0.0);
    var sum_b = vec4<f32>(0.0);
    var comp_b = vec4<f32>(0.0);
    let hub = t - s > P.small_max;  // scatter_bwd_large sums its rows; the padding is zeroed here
    if (!hub) {
        for (var e = s; e < t; e = e + 1u) {
            let p = pi[e];
            kahan4(&sum_a, &comp_a, p * grad_edge4(c4, e));
            if (two) {
                kahan4(&sum_b, &comp_b, p * grad_edge4(c4 + 1u, e));
            }
        }
    }
    store4(c4, j, sum_a - comp_a, hub);
    if (two) {
        store4(c4 + 1u, j, sum_b - comp_b, hub);
    }
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
    let s = row_ptr[j - P.p_shift] - P.ebase;
    let t = row_ptr[j + 1u - P.p_shift] - P.ebase;
    var acc = vec2<f32>(0.0, 0.0);
    for (var e = s + lid; e < t; e = e + LWG) {
        acc = kahan_add(acc, pi[e] * grad_edge(b, e));
    }
    let total = tree_sum(lid, acc);
    if (lid == 0u) {
        out[at(b, j, 32u)] = finish_energy(b, j, total);
    }
}

// scatter_bwd_large for a big source hub P.node0 (more out-edges than an edge window holds),
// over one piece (entries ps .. pt of the bound ranges, a multiple of LWG entries from the hub's
// first): workgroup g takes batch row b0 + g (n_large rows in the dispatch); each lane's
// (sum, comp) is carried in lanes[2 (g LWG + lid) ..] from piece to piece and reduced by
// tree_sum at the last: scatter_bwd_large's sum, the same bits.
@compute @workgroup_size(WG)
fn scatter_bwd_large_piece(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // WG must be 256 (LWG) for this entry point.
    let g = group_index(wid, nwg);
    if (g >= P.n_large) {
        return;
    }
    let b = P.b0 + g;
    let slot = 2u * (g * LWG + lid);
    var acc = vec2<f32>(0.0, 0.0);
    if ((P.piece & 1u) == 0u) {
        acc = vec2<f32>(lanes[slot], lanes[slot + 1u]);
    }
    for (var e = P.ps + lid; e < P.pt; e = e + LWG) {
        acc = kahan_add(acc, pi[e] * grad_edge(b, e));
    }
    if ((P.piece & 2u) == 0u) {
        lanes[slot] = acc.x;
        lanes[slot + 1u] = acc.y;
        return;
    }
    let total = tree_sum(lid, acc);
    if (lid == 0u) {
        out[at(b, P.node0, 32u)] = finish_energy(b, P.node0, total);
    }
}

@compute @workgroup_size(WG)
fn scatter_bwd_pi(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = thread_index(gid, nwg);
    if (t >= P.n_edges) {
        return;
    }
    let e = P.eoff + t;
    let sj = src[e];
    var acc = start_pi(e);
    let nc4 = (P.batch + 3u) / 4u;
    for (var c = 0u; c < nc4; c = c + 1u) {
        // 4 rows loaded at once, summed in row order (b = 0, 1, 2, ...: the same bits as a
        // row-by-row loop); padding rows are skipped, not added (a compensated sum is not
        // unchanged by adding 0)
        acc = add_rows(acc, x4(c, sj) * grad_edge4(c, e), c);
    }
    store_pi(e, acc);
}

// acc plus the terms p of rows 4c .. 4c+3 below the batch, in row order
fn add_rows(acc: vec2<f32>, p: vec4<f32>, c: u32) -> vec2<f32> {
    let rows = min(4u, P.batch - 4u * c);
    if (rows == 4u) {  // straight-line: the same additions as the loop below
        return kahan_add(kahan_add(kahan_add(kahan_add(acc, p.x), p.y), p.z), p.w);
    }
    var a = acc;
    for (var l = 0u; l < rows; l = l + 1u) {
        a = kahan_add(a, p[l]);
    }
    return a;
}

// the running sum grad_pi[e] starts from: the previous batch chunk's (flags bit 6), else 0
fn start_pi(e: u32) -> vec2<f32> {
    if ((P.flags & 64u) != 0u) {
        return vec2<f32>(out[e], carry_comp[e]);
    }
    return vec2<f32>(0.0, 0.0);
}

// grad_pi[e]: the compensated sum acc, plus acc_in[e] with flags bit 2; every batch chunk but
// the last (flags bit 7) stores the running sum instead
fn store_pi(e: u32, acc: vec2<f32>) {
    if ((P.flags & 128u) != 0u) {
        out[e] = acc.x;
        carry_comp[e] = acc.y;
        return;
    }
    var total = acc.x - acc.y;
    if ((P.flags & 4u) != 0u) {
        total = acc_in[e] + total;
    }
    out[e] = total;
}

// scatter_bwd_pi for node-major energies and act_mask (flags bit 3 set; the host picks it): the
// same sum in the same order, the source node's 4 rows loaded as one vec4.
@compute @workgroup_size(WG)
fn scatter_bwd_pi_nm(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = thread_index(gid, nwg);
    if (t >= P.n_edges) {
        return;
    }
    let e = P.eoff + t;
    let nc4 = (P.batch + 3u) / 4u;
    let xs = src[e] * nc4;
    let ck = col_idx[e];
    let masked = (P.flags & 1u) != 0u;
    var acc = start_pi(e);
    for (var c = 0u; c < nc4; c = c + 1u) {
        var x = energies4[xs + c] * P.alpha;
        if (masked) {
            x = select(vec4<f32>(0.0), x, act_mask4[xs + c] != vec4<u32>(0u));
        }
        acc = add_rows(acc, x * grad4(c, ck), c);
    }
    store_pi(e, acc);
}
