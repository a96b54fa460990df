// segment_backward.wgsl: the backward of segment_softmax and edge_logits in two degree-binned
// dispatches (docs/definitions.md §4), gathers only, each also writing the sum-of-squares
// partials of every value it produces (the optimizer's gradient norm needs no extra pass).
//
// mode 0, over source segments (seg = row_ptr, idx = col_idx, feat = k):
//   dot_j = sum_{e in segment j} pi[e] * gpi[e]
//   dl[e] = pi[e] * (gpi[e] - dot_j) / tau                  (grad_logits, also grad_bias)
//   out[j, c] = sum_{e in segment j} dl[e] * feat[idx[e], c] (grad_q)
// mode 1, over the reverse index (seg = rev_ptr, idx = rev_pairs: (edge, source), feat = q):
//   out[n, c] = sum_{r in range n} dl[edge_r] * feat[source_r, c]   (grad_k; dl from mode 0)
// mode 2, mode 1 on the split reverse index (idx = the sources by target [E], dl gathered into
//   reverse-index order: dl[r] = grad_logits[edge_r]): the same terms, mode 0's indexing
//
// `seg` holds the pointers [n_nodes + 1] followed (at P.bins_off) by the nodes ordered by bin:
// n_small nodes of degree <= 16, n_mid of degree <= 256, then n_hub larger ones. Workgroups
// [0, Ws) take the small bin, thread per node (Ws = ceil(n_small / 64)); [Ws, Ws + Wm) the
// mid bin, a 32-lane group per node (two per workgroup: Wm = ceil(n_mid / 2)): the lanes
// stride the entries for the dot, then lane l owns the columns l, l + 32, ... (each a serial
// sum over the entries); the rest one workgroup per hub: the dot and every column strided
// over the 64 lanes and reduced by a fixed tree. Every sum is compensated (kahan_add) in a
// fixed order: results are bit-identical from run to run. In mode 0 the column sums read
// dl[e] back (after a storageBarrier where other lanes of the workgroup wrote it).
//
// partials[P.out_offset + w] = the sum of squares of every value workgroup w wrote (dl and
// out in mode 0, out in modes 1 and 2), its lanes' compensated sums reduced by the same fixed tree.
// WG must be 64.
//
// A graph cut into edge windows runs these dispatches once per window (the graph's global bins,
// only the window's nodes computed: node0, node1; its ranges bound, ebase) with `lanes` = 1,
// `seg` the window's own piece (ops_backward.window_pieces: its pointers from node p_shift on,
// then the list places of the dispatch's workgroups, at bins_off + place mod 2^32):
// each lane stores its compensated sum of squares (segment_bwd: (sum, comp) at
// partials[128 (w - w_first) + 2 lid ..], the dispatch covering workgroups w_first .. of the
// bins, so the lanes' scratch is bound in ranges; segment_bwd_serial: thread i takes the node
// at place m = w_first + i of the list and stores its value at partials[m]), written once over
// the windows; a window's dispatches cover only the runs of workgroups (places) that hold its
// nodes (ops_backward.window_runs); then
// segment_bwd_lanes (segment_bwd_serial_lanes) reduces them, read as `feat`, by the same tree
// (sum) into the real partials: the same bits.

struct SegBwdParams {
    n_nodes: u32,
    dim: u32,
    mode: u32,
    bins_off: u32,   // list place m is seg[bins_off + m] (n_nodes + 1; a window's piece: mod 2^32)
    n_small: u32,
    n_mid: u32,
    n_hub: u32,
    out_offset: u32, // first partials slot of this dispatch
    tau: f32,
    n_threads: u32,  // segment_bwd_serial: its invocations (thread i takes nodes i, i + n_threads, ...)
    node0: u32,      // edge windows (edge_windows.py): only the nodes node0 .. node1 - 1 are
    node1: u32,      //   computed (node1 = 0: every node)
    ebase: u32,      // seg[j] - ebase indexes the bound per-entry ranges (a window; else 0)
    lanes: u32,      // 1: write each lane's (sum, comp) of squares instead of the partial (windows)
    w_first: u32,    // lanes: the first workgroup of this dispatch (its lanes at the bound range's start)
    gathered: u32,   // 1 (modes 0, 2): entry r's feat row is row r of the bound feat (node_rows.py)
    o_shift: u32,    // out's row j starts at float j * dim - o_shift (mod 2^32; out bound from a node range)
    p_shift: u32,    // node j's pointers are seg[j - p_shift], seg[j + 1 - p_shift] (a window's piece; else 0)
    _pad1: u32,
    _pad2: u32,
}

const BW: u32 = 64u;     // the workgroup size
const LANES: u32 = 32u;  // lanes per mid-bin node

@group(0) @binding(0) var<uniform> P: SegBwdParams;
@group(0) @binding(1) var<storage, read> seg: array<u32>;
@group(0) @binding(2) var<storage, read> idx: array<u32>;
@group(0) @binding(3) var<storage, read> pi: array<f32>;
@group(0) @binding(4) var<storage, read> gpi: array<f32>;
@group(0) @binding(5) var<storage, read_write> dl: array<f32>;
@group(0) @binding(6) var<storage, read> feat: array<f32>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;
@group(0) @binding(8) var<storage, read_write> partials: array<f32>;
@group(0) @binding(9) var<storage, read_write> lanes_carry: array<f32>;  // segment_bwd_serial_carry

var<workgroup> sb_a: array<f32, 64>;
var<workgroup> sb_b: array<f32, 64>;

// The compensated sums `acc` of each group of `width` lanes (32 or 64; a constant at every
// call) reduced by a fixed binary tree; every lane gets its group's total. Call from uniform
// control flow (barriers).
fn group_sum(lid: u32, width: u32, acc: vec2<f32>) -> f32 {
    workgroupBarrier();  // earlier readers of sb_a / sb_b are done
    sb_a[lid] = acc.x;
    sb_b[lid] = acc.y;
    workgroupBarrier();
    let lane = lid % width;
    for (var st = width / 2u; st > 0u; st = st >> 1u) {
        if (lane < st) {
            let m = kahan_merge(vec2<f32>(sb_a[lid], sb_b[lid]), vec2<f32>(sb_a[lid + st], sb_b[lid + st]));
            sb_a[lid] = m.x;
            sb_b[lid] = m.y;
        }
        workgroupBarrier();
    }
    let base = lid - lane;
    return sb_a[base] - sb_b[base];
}

// modes 0 and 2: the row of feat entry r reads (its `other` node, or r itself when gathered)
fn feat_row(r: u32) -> u32 {
    if (P.gathered != 0u) {
        return r;
    }
    return idx[r];
}

// entry r's term of column c: dl * feat[other, c]
fn term(r: u32, c: u32) -> f32 {
    if (P.mode != 1u) {
        return dl[r] * feat[feat_row(r) * P.dim + c];
    }
    return dl[idx[2u * r]] * feat[idx[2u * r + 1u] * P.dim + c];
}

// columns c0, c0 + step, ... of node j (entries [s, t), serial); returns sq plus their squares
fn columns(j: u32, s: u32, t: u32, c0: u32, step: u32, sq_in: vec2<f32>) -> vec2<f32> {
    var sq = sq_in;
    for (var c = c0; c < P.dim; c = c + step) {
        var acc = vec2<f32>(0.0, 0.0);
        for (var r = s; r < t; r = r + 1u) {
            acc = kahan_add(acc, term(r, c));
        }
        let v = acc.x - acc.y;
        out[j * P.dim - P.o_shift + c] = v;
        sq = kahan_add(sq, v * v);
    }
    return sq;
}

// mode 0: dl over entries s + first, s + first + step, ... < t; returns sq plus their squares
fn write_dl(s: u32, t: u32, first: u32, step: u32, dot: f32, sq_in: vec2<f32>) -> vec2<f32> {
    var sq = sq_in;
    for (var e = s + first; e < t; e = e + step) {
        let v = pi[e] * (gpi[e] - dot) / P.tau;
        dl[e] = v;
        sq = kahan_add(sq, v * v);
    }
    return sq;
}

// compensated sum of pi * gpi over entries s + first, s + first + step, ... < t
fn dot_part(s: u32, t: u32, first: u32, step: u32) -> vec2<f32> {
    var acc = vec2<f32>(0.0, 0.0);
    for (var e = s + first; e < t; e = e + step) {
        acc = kahan_add(acc, pi[e] * gpi[e]);
    }
    return acc;
}

// entry r's terms of columns c .. c+3: dl * feat[other, c .. c+3]
fn term4(r: u32, c: u32) -> vec4<f32> {
    var w = 0.0;
    var o = 0u;
    if (P.mode != 1u) {
        w = dl[r];
        o = feat_row(r) * P.dim + c;
    } else {
        w = dl[idx[2u * r]];
        o = idx[2u * r + 1u] * P.dim + c;
    }
    return w * vec4<f32>(feat[o], feat[o + 1u], feat[o + 2u], feat[o + 3u]);
}

// every column of node j (entries [s, t)) as `columns(j, s, t, 0u, 1u, sq)`, 4 columns per pass
// over the entries: each column is the same compensated sum in the same order (the same bits),
// the entries' dl and indices are read once per 4 columns
fn columns_by4(j: u32, s: u32, t: u32, sq_in: vec2<f32>) -> vec2<f32> {
    var sq = sq_in;
    let d4 = P.dim & ~3u;
    for (var c = 0u; c < d4; c = c + 4u) {
        var sum = vec4<f32>(0.0);
        var comp = vec4<f32>(0.0);
        for (var r = s; r < t; r = r + 1u) {
            kahan4(&sum, &comp, term4(r, c));
        }
        let v = sum - comp;
        out[j * P.dim - P.o_shift + c] = v.x;
        out[j * P.dim - P.o_shift + c + 1u] = v.y;
        out[j * P.dim - P.o_shift + c + 2u] = v.z;
        out[j * P.dim - P.o_shift + c + 3u] = v.w;
        sq = kahan_add(kahan_add(kahan_add(kahan_add(sq, v.x * v.x), v.y * v.y), v.z * v.z), v.w * v.w);
    }
    return columns(j, s, t, d4, 1u, sq);
}

fn in_window(j: u32) -> bool {
    return P.node1 == 0u || (j >= P.node0 && j < P.node1);
}

fn small_node(j: u32) -> vec2<f32> {
    let s = seg[j - P.p_shift] - P.ebase;
    let t = seg[j + 1u - P.p_shift] - P.ebase;
    var sq = vec2<f32>(0.0, 0.0);
    if (P.mode == 0u) {
        let acc = dot_part(s, t, 0u, 1u);
        sq = write_dl(s, t, 0u, 1u, acc.x - acc.y, sq);  // read back by this invocation only
    }
    return columns_by4(j, s, t, sq);
}

// m: the node's place in the mid bin (>= n_mid, or outside the window: an idle group, which
// still meets the barriers)
fn mid_node(m: u32, lid: u32, busy: bool) -> vec2<f32> {
    let lane = lid % LANES;
    var j = 0u;
    var s = 0u;
    var t = 0u;
    if (busy) {
        j = seg[P.bins_off + P.n_small + m];
        s = seg[j - P.p_shift] - P.ebase;
        t = seg[j + 1u - P.p_shift] - P.ebase;
    }
    var sq = vec2<f32>(0.0, 0.0);
    if (P.mode == 0u) {
        let dot = group_sum(lid, LANES, dot_part(s, t, lane, LANES));
        sq = write_dl(s, t, lane, LANES, dot, sq);
        storageBarrier();  // the group's dl before the column sums read it
    }
    if (busy) {
        sq = columns(j, s, t, lane, LANES, sq);
    }
    return sq;
}

// busy: j is in the window (the same for the whole workgroup); else an idle workgroup that
// still meets the barriers and writes nothing
fn hub_node(j: u32, lid: u32, busy: bool) -> vec2<f32> {
    var s = 0u;
    var t = 0u;
    if (busy) {
        s = seg[j - P.p_shift] - P.ebase;
        t = seg[j + 1u - P.p_shift] - P.ebase;
    }
    var sq = vec2<f32>(0.0, 0.0);
    if (P.mode == 0u) {
        let dot = group_sum(lid, BW, dot_part(s, t, lid, BW));
        sq = write_dl(s, t, lid, BW, dot, sq);
        storageBarrier();  // the workgroup's dl before the column sums read it
    }
    for (var c = 0u; c < P.dim; c = c + 1u) {
        var acc = vec2<f32>(0.0, 0.0);
        for (var r = s + lid; r < t; r = r + BW) {
            acc = kahan_add(acc, term(r, c));
        }
        let v = group_sum(lid, BW, acc);
        if (lid == 0u && busy) {
            out[j * P.dim - P.o_shift + c] = v;
            sq = kahan_add(sq, v * v);
        }
    }
    return sq;
}

@compute @workgroup_size(WG)
fn segment_bwd(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let w = P.w_first + group_index(wid, nwg);
    let ws = (P.n_small + BW - 1u) / BW;
    let wm = (P.n_mid + 1u) / 2u;
    if (w >= ws + wm + P.n_hub) {
        return;  // a padding workgroup of a 2D-folded dispatch
    }
    var sq = vec2<f32>(0.0, 0.0);
    var mine = true;  // this lane's value belongs to this dispatch (its node in the window, or none)
    if (w < ws) {
        let i = w * BW + lid;
        if (i < P.n_small) {
            let j = seg[P.bins_off + i];
            mine = in_window(j);
            if (mine) {
                sq = small_node(j);
            }
        }
    } else if (w < ws + wm) {
        let m = (w - ws) * 2u + lid / LANES;
        var busy = m < P.n_mid;
        if (busy) {
            busy = in_window(seg[P.bins_off + P.n_small + m]);
            mine = busy;
        }
        sq = mid_node(m, lid, busy);
    } else {
        let j = seg[P.bins_off + P.n_small + P.n_mid + (w - ws - wm)];
        mine = in_window(j);  // the same for the whole workgroup
        sq = hub_node(j, lid, mine);
    }
    if (P.lanes != 0u) {
        if (mine) {
            partials[(w - P.w_first) * 2u * BW + 2u * lid] = sq.x;
            partials[(w - P.w_first) * 2u * BW + 2u * lid + 1u] = sq.y;
        }
        return;
    }
    let total = group_sum(lid, BW, sq);
    if (lid == 0u) {
        partials[P.out_offset + w] = total;
    }
}

// the partials of segment_bwd's windowed lanes (read as feat): workgroup w as segment_bwd ends
@compute @workgroup_size(WG)
fn segment_bwd_lanes(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let v = group_index(wid, nwg);
    let w = P.w_first + v;
    let ws = (P.n_small + BW - 1u) / BW;
    let wm = (P.n_mid + 1u) / 2u;
    if (w >= ws + wm + P.n_hub) {
        return;
    }
    let total = group_sum(lid, BW, vec2<f32>(feat[v * 2u * BW + 2u * lid], feat[v * 2u * BW + 2u * lid + 1u]));
    if (lid == 0u) {
        partials[P.out_offset + w] = total;
    }
}

// The same when every node is in the thread bin (SegmentBins.serial; the host picks it): thread
// i takes the nodes of list places i, i + n_threads, ... (one each unless the graph has more
// nodes than SegmentBins.serial_threads allows) and writes one sum-of-squares partial,
// partials[P.out_offset + i]; no barrier and no workgroup memory in the pipeline (on llvmpipe
// a pipeline with barriers runs every invocation several times slower).
@compute @workgroup_size(WG)
fn segment_bwd_serial(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = thread_index(gid, nwg);
    if (i >= P.n_threads) {
        return;
    }
    if (P.lanes != 0u) {  // a window's run of places w_first .. w_first + n_threads - 1
        let m = P.w_first + i;
        let j = seg[P.bins_off + m];
        if (in_window(j)) {
            let v = small_node(j);
            partials[m - P.out_offset] = v.x - v.y;  // the values bound from place out_offset on
        }
        return;
    }
    var sq = vec2<f32>(0.0, 0.0);
    for (var m = i; m < P.n_small; m = m + P.n_threads) {
        let v = small_node(seg[P.bins_off + m]);
        sq = kahan_add(sq, v.x - v.y);
    }
    partials[P.out_offset + i] = sq.x - sq.y;
}

// the partials of segment_bwd_serial's windowed node values (read as feat), as it sums them
@compute @workgroup_size(WG)
fn segment_bwd_serial_lanes(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = thread_index(gid, nwg);
    if (i >= P.n_threads) {
        return;
    }
    var sq = vec2<f32>(0.0, 0.0);
    for (var m = i; m < P.n_small; m = m + P.n_threads) {
        sq = kahan_add(sq, feat[m]);
    }
    partials[P.out_offset + i] = sq.x - sq.y;
}

// segment_bwd_serial_lanes over node values past one binding, in ranges of consecutive places
// (ops_backward._serial_lanes_in_ranges): this dispatch's places are round node0 of the threads,
// threads w_first .. w_first + node1 - 1 (place node0 * n_threads + thread), bound as feat from
// element ebase and their carry from float o_shift; each thread's compensated sum starts at
// its first place (round 0), is carried to the next round, and is written to partials at its
// last place: segment_bwd_serial_lanes's sum, in the same order.
@compute @workgroup_size(WG)
fn segment_bwd_serial_carry(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = thread_index(gid, nwg);
    if (i >= P.node1) {
        return;
    }
    let t = P.w_first + i;
    let m = P.node0 * P.n_threads + t;
    let c = P.o_shift + 2u * i;
    var sq = vec2<f32>(0.0, 0.0);
    if (P.node0 != 0u) {
        sq = vec2<f32>(lanes_carry[c], lanes_carry[c + 1u]);
    }
    sq = kahan_add(sq, feat[P.ebase + i]);
    if (m + P.n_threads >= P.n_small) {
        partials[P.out_offset + t] = sq.x - sq.y;
    } else {
        lanes_carry[c] = sq.x;
        lanes_carry[c + 1u] = sq.y;
    }
}
