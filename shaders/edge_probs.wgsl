// edge_probs.wgsl: the fused forward (docs/definitions.md §2), one pass per source segment:
//
// z[e] = clamp((dot(q[j], k[col_idx[e]]) + bias[e]) / tau, -f32max, f32max)   (j = src[e])
// kept[e] = top_k == 0 || deg <= top_k || rank(e) < top_k, rank by (z descending, edge ascending)
// pi[e] = kept ? exp(z - m) / sum_kept exp(z - m) : 0      (m = max kept z)
//
// The logits stay in registers or workgroup memory: only pi (mode 0) or the kept mask (mode 1,
// u32 0/1) is written. With dim == 0 the logits are `bias` itself (the segment_softmax and
// segment_topk ops bind their input there). q and k rows are read as vec4 (row_dot.wgsl).
//
// The degree bins are listed per graph in `seg_list` = [small nodes | mid nodes | hub nodes]
// (degree-0 nodes have nothing to write). The entry point `edge_probs` (SWG = 64 invocations per
// workgroup) serves the first two in one dispatch (`edge_probs_small` when there are no mid
// segments):
// * workgroups [0, small_wg): one thread per segment of the thread bin: degree 1..SMALL_MAX with
//   the z in registers and the top-k by pairwise ranks; degrees 17..32 (only with the "cpu"
//   degree bins) through `result`, by the rank-(k-1) entry;
// * [small_wg, small_wg + mid_wg): a group of 32 lanes per segment of degree SMALL_MAX+1..MID_MAX,
//   2 segments per workgroup; lane l takes edges l, l + 32, ...; the z go to workgroup memory,
//   each lane ranks its own edges against the segment, and max and sum are per-lane partials
//   combined in lane order (every lane computes the same total).
// `edge_probs_hub` (LWG = 256) runs one workgroup per segment of degree > MID_MAX (hubs), in a
// second dispatch only when the graph has hubs. The z are stored in the output (each invocation
// rereads only the entries it wrote); the top-k threshold is a radix select, 8 bits per pass
// (4 passes over the order-preserving u32 key of z, counts in a 256-bin workgroup histogram),
// then, only when the k-th value ties, 4 more over the edge index among the ties; max and
// compensated sum by fixed trees.
// Every barrier is in workgroup-uniform control flow, every count is an integer and every
// float reduction has a fixed order: the same bits run to run.

struct ProbParams {
    n_small: u32,
    n_mid: u32,
    n_hub: u32,
    small_wg: u32,
    mid_wg: u32,
    dim: u32,
    top_k: u32,
    mode: u32,
    tau: f32,
    ebase: u32,  // row_ptr[j] - ebase indexes the bound [E] ranges (an edge window; 0: the whole graph)
    gathered: u32,  // 1: k's row of entry e is row e of the bound k (gathered per edge, node_rows.py)
    q_shift: u32,   // q's row j starts at float j * dim - q_shift (mod 2^32; q bound from a node range)
    // edge_probs_piece (a big hub in pieces): the phase and radix round of this dispatch, the
    // piece's entries ps .. pt of the bound ranges, pos: the hub-local index of entry ps, deg:
    // the hub's degree, node: the hub; first / last: the hub's first and last piece
    phase: u32,
    round: u32,
    ps: u32,
    pt: u32,
    pos: u32,
    deg: u32,
    node: u32,
    first: u32,
    last: u32,
    p_shift: u32,   // node j's pointers are row_ptr[j - p_shift], row_ptr[j + 1 - p_shift] (a node block; else 0)
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> P: ProbParams;
@group(0) @binding(1) var<storage, read> row_ptr: array<u32>;
@group(0) @binding(2) var<storage, read> col_idx: array<u32>;
@group(0) @binding(3) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> bias: array<f32>;
@group(0) @binding(6) var<storage, read_write> result: array<u32>;
@group(0) @binding(7) var<storage, read> seg_list: array<u32>;
@group(0) @binding(8) var<storage, read_write> carry: array<u32>;  // edge_probs_piece's state
@group(0) @binding(9) var<storage, read_write> carry_lanes: array<u32>;  // and its lanes' sums

// the bin bounds (kernels.py THREAD_DEGREE_MAX and GROUP_DEGREE_MAX)
const SMALL_MAX: u32 = 16u;
const MID_MAX: u32 = 256u;
const SELECT_MAX: u32 = 8u;  // seg_small's top-k by k selection passes up to this k, else by ranks
const SWG: u32 = 64u;      // the workgroup size of edge_probs (the host passes it as WG)
const GROUP: u32 = 32u;
const GROUPS: u32 = 2u;    // SWG / GROUP
const PER_LANE: u32 = 8u;  // MID_MAX / GROUP

var<workgroup> mid_z: array<f32, 512>; // GROUPS * MID_MAX
var<workgroup> mid_part: array<f32, 64>; // SWG
var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> pick: array<u32, 3>;

fn edge_z(e: u32, qb: u32) -> f32 {
    var l = bias[e];
    if (P.dim != 0u) {
        var kr = e;
        if (P.gathered == 0u) {
            kr = col_idx[e];
        }
        l = row_dot(qb, kr * P.dim, P.dim) + l;
    }
    let fm = f32_max();
    return clamp(l / P.tau, -fm, fm);
}

// order-preserving key: a < b as floats <=> zkey(a) < zkey(b); -0 maps like +0.
fn zkey(z: f32) -> u32 {
    var u = bitcast<u32>(z);
    if (u == 0x80000000u) {
        u = 0u;
    }
    if ((u & 0x80000000u) != 0u) {
        return ~u;
    }
    return u | 0x80000000u;
}

// ---------------------------------------------------------------- one thread per segment

fn seg_small(j: u32) {
    let s = row_ptr[j - P.p_shift] - P.ebase;
    let deg = row_ptr[j + 1u - P.p_shift] - row_ptr[j - P.p_shift];
    let qb = j * P.dim - P.q_shift;
    // constant trip counts: the loops unroll and zs stays in registers
    var zs: array<f32, SMALL_MAX>;
    for (var i = 0u; i < SMALL_MAX; i = i + 1u) {
        if (i < deg) {
            zs[i] = edge_z(s + i, qb);
        }
    }
    let k = P.top_k;
    var keep = (1u << deg) - 1u; // bit i: edge s + i kept
    if (k != 0u && deg > k && k <= SELECT_MAX) {
        // k passes, each keeping the best entry (z descending, edge ascending) not kept yet:
        // k * SMALL_MAX steps instead of SMALL_MAX^2, the same set as the ranks below (a NaN z,
        // which no comparison ranks below anything, is kept first as there, outside the k)
        keep = 0u;
        for (var i = 0u; i < SMALL_MAX; i = i + 1u) {
            if (i < deg && (bitcast<u32>(zs[i]) & 0x7fffffffu) > 0x7f800000u) {
                keep = keep | (1u << i);
            }
        }
        for (var p = 0u; p < k; p = p + 1u) {
            var bi = SMALL_MAX;
            var bz = 0.0;
            for (var i = 0u; i < SMALL_MAX; i = i + 1u) {
                if (i < deg && ((keep >> i) & 1u) == 0u && (bi == SMALL_MAX || zs[i] > bz)) {
                    bi = i;
                    bz = zs[i];
                }
            }
            if (bi < SMALL_MAX) {
                keep = keep | (1u << bi);
            }
        }
    } else if (k != 0u && deg > k) {
        keep = 0u;
        for (var i = 0u; i < SMALL_MAX; i = i + 1u) {
            var rank = 0u;
            for (var o = 0u; o < SMALL_MAX; o = o + 1u) {
                if (o < deg && (zs[o] > zs[i] || (zs[o] == zs[i] && o < i))) {
                    rank = rank + 1u;
                }
            }
            if (i < deg && rank < k) {
                keep = keep | (1u << i);
            }
        }
    }
    if (P.mode == 1u) {
        for (var i = 0u; i < SMALL_MAX; i = i + 1u) {
            if (i < deg) {
                result[s + i] = (keep >> i) & 1u;
            }
        }
        return;
    }
    var m = -f32_max();
    for (var i = 0u; i < SMALL_MAX; i = i + 1u) {
        if (((keep >> i) & 1u) != 0u) {
            m = max(m, zs[i]);
        }
    }
    var total = 0.0;
    for (var i = 0u; i < SMALL_MAX; i = i + 1u) {
        var ex = 0.0;
        if (((keep >> i) & 1u) != 0u) {
            ex = exp(zs[i] - m);
        }
        zs[i] = ex;
        total = total + ex;
    }
    for (var i = 0u; i < SMALL_MAX; i = i + 1u) {
        if (i < deg) {
            result[s + i] = bitcast<u32>(zs[i] / total);
        }
    }
}

// One thread per segment of degree SMALL_MAX+1..32 (the "cpu" degree bins put them in the thread
// bin): the z are stored in `result` (the invocation rereads only its own segment), the top-k
// threshold is the entry of rank k - 1 by (key descending, edge ascending), and max, sum and
// the final division run in edge order as in seg_small (the same bits for the same z). The
// ranks take deg^2 steps: llvmpipe ends an invocation's loops after 65,535 iterations in all,
// so this path must stay for small degrees.
fn seg_serial(j: u32) {
    let s = row_ptr[j - P.p_shift] - P.ebase;
    let t = row_ptr[j + 1u - P.p_shift] - P.ebase;
    let qb = j * P.dim - P.q_shift;
    for (var e = s; e < t; e = e + 1u) {
        result[e] = bitcast<u32>(edge_z(e, qb));
    }
    let k = P.top_k;
    let use_k = k != 0u && t - s > k;
    var tkey = 0u; // kept <=> key > tkey, or key == tkey and edge <= tedge
    var tedge = t;
    if (use_k) {
        for (var e = s; e < t; e = e + 1u) {
            let key = zkey(bitcast<f32>(result[e]));
            var rank = 0u;
            for (var o = s; o < t; o = o + 1u) {
                let ko = zkey(bitcast<f32>(result[o]));
                if (ko > key || (ko == key && o < e)) {
                    rank = rank + 1u;
                }
            }
            if (rank == k - 1u) {
                tkey = key;
                tedge = e;
            }
        }
    }
    var m = -f32_max();
    for (var e = s; e < t; e = e + 1u) {
        let z = bitcast<f32>(result[e]);
        let key = zkey(z);
        if (!use_k || key > tkey || (key == tkey && e <= tedge)) {
            m = max(m, z);
        }
    }
    var total = 0.0;
    for (var e = s; e < t; e = e + 1u) {
        let z = bitcast<f32>(result[e]);
        let key = zkey(z);
        if (!use_k || key > tkey || (key == tkey && e <= tedge)) {
            total = total + exp(z - m);
        } else {
            total = total + 0.0;
        }
    }
    for (var e = s; e < t; e = e + 1u) {
        let z = bitcast<f32>(result[e]);
        let key = zkey(z);
        let kept = !use_k || key > tkey || (key == tkey && e <= tedge);
        if (P.mode == 1u) {
            result[e] = select(0u, 1u, kept);
        } else if (kept) {
            result[e] = bitcast<u32>(exp(z - m) / total);
        } else {
            result[e] = 0u;
        }
    }
}

// a segment of the thread bin: in registers up to SMALL_MAX, else through `result`
fn seg_thread(j: u32) {
    if (row_ptr[j + 1u - P.p_shift] - row_ptr[j - P.p_shift] <= SMALL_MAX) {
        seg_small(j);
    } else {
        seg_serial(j);
    }
}

// ---------------------------------------------------------------- 32 lanes per segment

// mw: the index of this workgroup among the mid workgroups. Called in uniform control flow.
// The z live in workgroup memory only (no private arrays: llvmpipe then keeps seg_small's in
// registers); after the ranks are taken each lane overwrites its own slots with exp(z - m).
fn seg_mid(mw: u32, lid: u32) {
    let g = lid / GROUP;
    let lane = lid % GROUP;
    let gi = mw * GROUPS + g;
    var s = 0u;
    var deg = 0u; // a group past the list has nothing to do but still meets every barrier
    var qb = 0u;
    if (gi < P.n_mid) {
        let j = seg_list[P.n_small + gi];
        s = row_ptr[j - P.p_shift] - P.ebase;
        deg = row_ptr[j + 1u - P.p_shift] - row_ptr[j - P.p_shift];
        qb = j * P.dim - P.q_shift;
    }
    let base = g * MID_MAX;
    // this lane's edges: s + lane + GROUP * r, r < PER_LANE
    for (var i = lane; i < deg; i = i + GROUP) {
        mid_z[base + i] = edge_z(s + i, qb);
    }
    workgroupBarrier();
    let k = P.top_k;
    let use_k = k != 0u && deg > k;
    var keep = 0u; // bit r: edge s + lane + GROUP * r kept
    for (var r = 0u; r < PER_LANE; r = r + 1u) {
        let i = lane + GROUP * r;
        if (i < deg) {
            var kept = true;
            if (use_k) {
                let z = mid_z[base + i];
                var rank = 0u;
                for (var o = 0u; o < deg; o = o + 1u) {
                    let zo = mid_z[base + o];
                    if (zo > z || (zo == z && o < i)) {
                        rank = rank + 1u;
                    }
                }
                kept = rank < k;
            }
            if (kept) {
                keep = keep | (1u << r);
            }
        }
    }
    if (P.mode == 1u) {
        for (var r = 0u; r < PER_LANE; r = r + 1u) {
            let i = lane + GROUP * r;
            if (i < deg) {
                result[s + i] = (keep >> r) & 1u;
            }
        }
        return;
    }
    var m = -f32_max();
    for (var r = 0u; r < PER_LANE; r = r + 1u) {
        if (((keep >> r) & 1u) != 0u) {
            m = max(m, mid_z[base + lane + GROUP * r]);
        }
    }
    let lo = g * GROUP;
    mid_part[lid] = m;
    workgroupBarrier();
    m = mid_part[lo];
    for (var l = 1u; l < GROUP; l = l + 1u) {
        m = max(m, mid_part[lo + l]);
    }
    workgroupBarrier();
    var part = 0.0;
    for (var r = 0u; r < PER_LANE; r = r + 1u) {
        let i = lane + GROUP * r;
        if (((keep >> r) & 1u) != 0u) {
            let ex = exp(mid_z[base + i] - m);
            mid_z[base + i] = ex;
            part = part + ex;
        }
    }
    mid_part[lid] = part;
    workgroupBarrier();
    var total = 0.0;
    for (var l = 0u; l < GROUP; l = l + 1u) {
        total = total + mid_part[lo + l];
    }
    for (var r = 0u; r < PER_LANE; r = r + 1u) {
        let i = lane + GROUP * r;
        if (i < deg) {
            var p = 0.0;
            if (((keep >> r) & 1u) != 0u) {
                p = mid_z[base + i] / total;
            }
            result[s + i] = bitcast<u32>(p);
        }
    }
}

// ---------------------------------------------------------------- workgroup per hub

// The k-th largest key (1 <= k <= the number of candidates) of the hub [s, t) by a radix
// select, 8 bits per pass. Keys: zkey of the z stored in `result`; with `ties`, ~(e - s) of
// the edges whose key is tie_key (so the k-th largest is the k-th lowest edge index).
// Returns (key, how many edges with exactly that key are among the k largest, how many edges
// have that key); pick[1], pick[2] hold the last two. Called in uniform control flow.
fn radix_kth(s: u32, t: u32, lid: u32, k: u32, ties: bool, tie_key: u32) -> vec3<u32> {
    var prefix = 0u;
    var mask = 0u;
    var rem = k;
    var cnt = 0u;
    for (var round = 0u; round < 4u; round = round + 1u) {
        let shift = 24u - 8u * round;
        atomicStore(&hist[lid], 0u);
        workgroupBarrier();
        for (var e = s + lid; e < t; e = e + LWG) {
            var key = zkey(bitcast<f32>(result[e]));
            var live = true;
            if (ties) {
                live = key == tie_key;
                key = ~(e - s);
            }
            if (live && (key & mask) == prefix) {
                atomicAdd(&hist[(key >> shift) & 255u], 1u);
            }
        }
        workgroupBarrier();
        if (lid == 0u) {
            // the digit holding the rem-th largest candidate, scanning from the top
            var cum = 0u;
            var d = 255u;
            loop {
                let c = atomicLoad(&hist[d]);
                if (cum + c >= rem || d == 0u) {
                    pick[0] = d;
                    pick[1] = rem - cum;
                    pick[2] = c;
                    break;
                }
                cum = cum + c;
                d = d - 1u;
            }
        }
        workgroupBarrier();
        prefix = prefix | (pick[0] << shift);
        mask = mask | (255u << shift);
        rem = pick[1];
        cnt = pick[2];
    }
    return vec3<u32>(prefix, rem, cnt);
}

fn hub_kept(z: f32, e: u32, s: u32, use_k: bool, tkey: u32, tidx: u32) -> bool {
    let key = zkey(z);
    return !use_k || key > tkey || (key == tkey && e - s <= tidx);
}

// The max of the LWG lanes' m by a fixed tree in red_a (workgroup_reduce.wgsl); every lane
// gets it. Call from uniform control flow; a barrier before red_a's next use.
fn max_tree(lid: u32, m: f32) -> f32 {
    red_a[lid] = m;
    workgroupBarrier();
    for (var st = LWG / 2u; st > 0u; st = st >> 1u) {
        if (lid < st) {
            red_a[lid] = max(red_a[lid], red_a[lid + st]);
        }
        workgroupBarrier();
    }
    return red_a[0];
}

// x into an open block of 16 terms (blk, nb), the block into the compensated sum acc when full
fn add_blocked(acc: ptr<function, vec2<f32>>, blk: ptr<function, f32>, nb: ptr<function, u32>, x: f32) {
    *blk = *blk + x;
    *nb = *nb + 1u;
    if (*nb == 16u) {
        *acc = kahan_add(*acc, *blk);
        *blk = 0.0;
        *nb = 0u;
    }
}

// Called in uniform control flow (j is the same for the whole workgroup).
fn seg_hub(j: u32, lid: u32) {
    let s = row_ptr[j - P.p_shift] - P.ebase;
    let t = row_ptr[j + 1u - P.p_shift] - P.ebase;
    let deg = t - s;
    let qb = j * P.dim - P.q_shift;
    for (var e = s + lid; e < t; e = e + LWG) {
        result[e] = bitcast<u32>(edge_z(e, qb));
    }
    let k = P.top_k;
    let use_k = k != 0u && deg > k;
    var tkey = 0u;          // key of the k-th largest z
    var tidx = 0xffffffffu; // among z with key == tkey, keep local index <= tidx
    if (use_k) {
        tkey = radix_kth(s, t, lid, k, false, 0u).x;
        // uniform copies: keep the lowest `need` of the `ties` edges whose key is tkey
        let need = workgroupUniformLoad(&pick[1]);
        let ties = workgroupUniformLoad(&pick[2]);
        if (need < ties) {
            tidx = ~radix_kth(s, t, lid, need, true, tkey).x;
        }
    }
    if (P.mode == 1u) {
        for (var e = s + lid; e < t; e = e + LWG) {
            result[e] = select(0u, 1u, hub_kept(bitcast<f32>(result[e]), e, s, use_k, tkey, tidx));
        }
        return;
    }
    // max over kept z by a fixed tree in red_a (workgroup_reduce.wgsl)
    var m = -f32_max();
    for (var e = s + lid; e < t; e = e + LWG) {
        let z = bitcast<f32>(result[e]);
        if (hub_kept(z, e, s, use_k, tkey, tidx)) {
            m = max(m, z);
        }
    }
    let mm = max_tree(lid, m);
    workgroupBarrier();
    // compensated sum of exp(z - m) over kept, in blocks of 16 terms
    var acc = vec2<f32>(0.0, 0.0);
    var blk = 0.0;
    var nb = 0u;
    for (var e = s + lid; e < t; e = e + LWG) {
        let z = bitcast<f32>(result[e]);
        if (hub_kept(z, e, s, use_k, tkey, tidx)) {
            add_blocked(&acc, &blk, &nb, exp(z - mm));
        }
    }
    acc = kahan_add(acc, blk);
    let total = tree_sum(lid, acc);
    for (var e = s + lid; e < t; e = e + LWG) {
        let z = bitcast<f32>(result[e]);
        var p = 0.0;
        if (hub_kept(z, e, s, use_k, tkey, tidx)) {
            p = exp(z - mm) / total;
        }
        result[e] = bitcast<u32>(p);
    }
}

// ---------------------------------------------------------------- the entry points

@compute @workgroup_size(WG)
fn edge_probs(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // WG must be SWG (64): the host passes it.
    let w = group_index(wid, nwg);
    if (w < P.small_wg) {
        let i = w * SWG + lid;
        if (i < P.n_small) {
            seg_thread(seg_list[i]);
        }
        return;
    }
    let mw = w - P.small_wg;
    if (mw < P.mid_wg) {
        seg_mid(mw, lid);
    }
}

// The same for a graph without mid segments (the host picks it): no barrier and no workgroup
// memory in the pipeline, which lets llvmpipe keep seg_small's z in registers (2-4x faster there).
@compute @workgroup_size(WG)
fn edge_probs_small(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // WG must be SWG (64): the host passes it.
    let i = group_index(wid, nwg) * SWG + lid;
    if (i < P.n_small) {
        seg_thread(seg_list[i]);
    }
}

@compute @workgroup_size(WG)
fn edge_probs_hub(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // WG must be LWG (256): the host passes it.
    let w = group_index(wid, nwg);
    if (w < P.n_hub) {
        seg_hub(seg_list[P.n_small + P.n_mid + w], lid);
    }
}

// ---------------------------------------------------------------- a big hub in pieces

// A source hub of more out-edges than one edge window holds (edge_windows.py) runs seg_hub in
// pieces, each bound on its own and starting a multiple of LWG entries from the hub's first, so
// lane l meets the entries it meets in seg_hub, in the same order. One dispatch (one workgroup)
// per piece and phase: 0 the z (stored in `result`); 1 a radix round (rounds 0-3 on the key,
// 4-7 on the edge index among ties, no-ops unless the k-th key ties): the piece's histogram
// added to carry[0 .. 256), the digit picked at the last piece; 2 (mode 1) the kept mask; 3 the
// max (each lane's carried, the tree at the last piece); 4 the compensated sum (each lane's
// (sum, comp, open block, its count) carried in carry_lanes[4 lid ..], tree_sum at the last);
// 5 pi. `carry` (u32 [528]): the histogram in [0, 256), then
const C_PREFIX: u32 = 256u;  // the select's prefix, mask, rem, count of the rem-th digit
const C_TKEY: u32 = 260u;    // the k-th key, the tie index bound, 1 when the ties are selected
const C_MM: u32 = 263u;      // the max kept z, the total (f32 bits)
const C_LANES: u32 = 272u;   // LWG: the lanes' max

fn piece_kept(z: f32, e: u32) -> bool {
    if (P.top_k == 0u) {
        return true;
    }
    return hub_kept(z, P.pos + (e - P.ps), 0u, true, carry[C_TKEY], carry[C_TKEY + 1u]);
}

// phase 1: radix round P.round over this piece
fn piece_round(lid: u32) {
    let tie = P.round >= 4u;
    if (lid == 0u) {
        pick[0] = select(1u, carry[C_TKEY + 2u], tie);
    }
    if (workgroupUniformLoad(&pick[0]) == 0u) {
        return;  // the k-th key does not tie: no tie rounds
    }
    let shift = 24u - 8u * (P.round % 4u);
    var prefix = 0u;
    var mask = 0u;
    if (P.round % 4u != 0u) {
        prefix = carry[C_PREFIX];
        mask = carry[C_PREFIX + 1u];
    }
    let tie_key = carry[C_TKEY];
    atomicStore(&hist[lid], 0u);
    workgroupBarrier();
    for (var e = P.ps + lid; e < P.pt; e = e + LWG) {
        var key = zkey(bitcast<f32>(result[e]));
        var live = true;
        if (tie) {
            live = key == tie_key;
            key = ~(P.pos + (e - P.ps));
        }
        if (live && (key & mask) == prefix) {
            atomicAdd(&hist[(key >> shift) & 255u], 1u);
        }
    }
    workgroupBarrier();
    var c = atomicLoad(&hist[lid]);
    if (P.first == 0u) {
        c = c + carry[lid];
    }
    carry[lid] = c;
    storageBarrier();
    if (P.last == 0u || lid != 0u) {
        return;
    }
    var rem = P.top_k;
    if (P.round != 0u) {
        rem = carry[C_PREFIX + 2u];
    }
    var cum = 0u;
    var d = 255u;
    loop {
        let n = carry[d];
        if (cum + n >= rem || d == 0u) {
            break;
        }
        cum = cum + n;
        d = d - 1u;
    }
    prefix = prefix | (d << shift);
    carry[C_PREFIX] = prefix;
    carry[C_PREFIX + 1u] = mask | (255u << shift);
    carry[C_PREFIX + 2u] = rem - cum;
    carry[C_PREFIX + 3u] = carry[d];
    if (P.round == 3u) {  // the k-th key: keep its lowest rem - cum edges of carry[d] ties
        carry[C_TKEY] = prefix;
        carry[C_TKEY + 1u] = 0xffffffffu;
        carry[C_TKEY + 2u] = select(0u, 1u, rem - cum < carry[d]);
    } else if (P.round == 7u) {
        carry[C_TKEY + 1u] = ~prefix;
    }
}

fn piece_max(lid: u32) {
    var m = -f32_max();
    if (P.first == 0u) {
        m = bitcast<f32>(carry[C_LANES + lid]);
    }
    for (var e = P.ps + lid; e < P.pt; e = e + LWG) {
        let z = bitcast<f32>(result[e]);
        if (piece_kept(z, e)) {
            m = max(m, z);
        }
    }
    if (P.last == 0u) {
        carry[C_LANES + lid] = bitcast<u32>(m);
        return;
    }
    let mm = max_tree(lid, m);
    if (lid == 0u) {
        carry[C_MM] = bitcast<u32>(mm);
    }
}

fn piece_sum(lid: u32) {
    let mm = bitcast<f32>(carry[C_MM]);
    var acc = vec2<f32>(0.0, 0.0);
    var blk = 0.0;
    var nb = 0u;
    let l = 4u * lid;
    if (P.first == 0u) {
        acc = vec2<f32>(bitcast<f32>(carry_lanes[l]), bitcast<f32>(carry_lanes[l + 1u]));
        blk = bitcast<f32>(carry_lanes[l + 2u]);
        nb = carry_lanes[l + 3u];
    }
    for (var e = P.ps + lid; e < P.pt; e = e + LWG) {
        let z = bitcast<f32>(result[e]);
        if (piece_kept(z, e)) {
            add_blocked(&acc, &blk, &nb, exp(z - mm));
        }
    }
    if (P.last == 0u) {
        carry_lanes[l] = bitcast<u32>(acc.x);
        carry_lanes[l + 1u] = bitcast<u32>(acc.y);
        carry_lanes[l + 2u] = bitcast<u32>(blk);
        carry_lanes[l + 3u] = nb;
        return;
    }
    acc = kahan_add(acc, blk);
    let total = tree_sum(lid, acc);
    if (lid == 0u) {
        carry[C_MM + 1u] = bitcast<u32>(total);
    }
}

@compute @workgroup_size(WG)
fn edge_probs_piece(@builtin(local_invocation_index) lid: u32) {
    // WG must be LWG (256): the host passes it. One workgroup.
    if (P.phase == 0u) {
        let qb = P.node * P.dim - P.q_shift;
        for (var e = P.ps + lid; e < P.pt; e = e + LWG) {
            result[e] = bitcast<u32>(edge_z(e, qb));
        }
    } else if (P.phase == 1u) {
        piece_round(lid);
    } else if (P.phase == 2u) {
        for (var e = P.ps + lid; e < P.pt; e = e + LWG) {
            result[e] = select(0u, 1u, piece_kept(bitcast<f32>(result[e]), e));
        }
    } else if (P.phase == 3u) {
        piece_max(lid);
    } else if (P.phase == 4u) {
        piece_sum(lid);
    } else {
        let mm = bitcast<f32>(carry[C_MM]);
        let total = bitcast<f32>(carry[C_MM + 1u]);
        for (var e = P.ps + lid; e < P.pt; e = e + LWG) {
            let z = bitcast<f32>(result[e]);
            var p = 0.0;
            if (piece_kept(z, e)) {
                p = exp(z - mm) / total;
            }
            result[e] = bitcast<u32>(p);
        }
    }
}
