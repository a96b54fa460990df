// segment_softmax.wgsl: per-segment softmax fused with top-k (docs/definitions.md §2), and the top-k mask.
//
// z[e] = clamp(logits[e] / tau, -f32max, f32max)
// kept[e] = top_k == 0 || deg <= top_k || rank(e) < top_k, rank by (z descending, edge ascending)
// pi[e] = kept ? exp(z - m) / sum_kept exp(z - m) : 0      (m = max kept z)
//
// mode 0 writes pi (as f32 bits) into `out`; mode 1 writes the kept mask (u32 0/1).
//
// Two degree classes, chosen on the host:
// * softmax_small: one thread per segment of degree 1..small_max. Fast paths (2 reads and
//   1 write per edge instead of up to 3 reads and 2 writes):
//   - no top-k and deg <= ONLINE_MAX: one pass computing max and sum online (on a new max
//     the partial sum is rescaled by exp(old max - new max); one exp per edge, in edge
//     order), then one pass writing exp(z - m) / sum; the z stay in registers in between
//     (constant-trip loops over a private array), so 1 read + 1 write per edge;
//   - top_k in 1..4 (< deg): one pass keeping the 4 largest (z desc, e asc) in registers
//     (branchless insertion); m = the first, sum = the first k exp(z_i - m) in rank order;
//     then one pass writing the kept exp(z - m) / sum. For mode 0 this runs as the
//     softmax_small_k4 entry point (host-chosen), whose deg <= ONLINE_MAX path also keeps
//     the z in registers.
//   Otherwise top-k by k selection passes (O(k * deg), k < deg <= small_max); compensated
//   (Kahan) sum in edge order.
// * softmax_large: one workgroup of 256 per segment of degree > small_max (from the
//   `large_nodes` list). Top-k threshold by a radix bisection over the order-preserving u32
//   key of z (32 counting passes) and a bisection over the edge index among ties (O(64 deg / 256)
//   per thread, independent of k); max and compensated sum by strided per-thread partials and a
//   fixed-order tree in workgroup memory. Integer counts use workgroup atomics (exact).
// Both are deterministic run to run.

struct SoftmaxParams {
    n_nodes: u32,
    top_k: u32,
    mode: u32,
    n_large: u32,
    tau: f32,
    small_max: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> P: SoftmaxParams;
@group(0) @binding(1) var<storage, read> row_ptr: array<u32>;
@group(0) @binding(2) var<storage, read> logits: array<f32>;
@group(0) @binding(3) var<storage, read_write> result: array<u32>;
@group(0) @binding(4) var<storage, read> large_nodes: array<u32>;

fn zval(e: u32) -> f32 {
    let fm = f32_max();
    return clamp(logits[e] / P.tau, -fm, fm);
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

fn write_out(e: u32, kept: bool, p: f32) {
    if (P.mode == 1u) {
        result[e] = select(0u, 1u, kept);
    } else {
        result[e] = bitcast<u32>(p);
    }
}

// Segments this short take the one-pass online max/sum (its rescalings cost a few ulp of
// the sum each; longer segments keep the compensated 3-pass sum).
const ONLINE_MAX: u32 = 16u;

// No top-k, 1 <= deg <= ONLINE_MAX: online max and sum (fixed edge order), then one write pass.
fn softmax_online(s: u32, t: u32) {
    if (P.mode == 1u) {
        for (var e = s; e < t; e = e + 1u) {
            result[e] = 1u;
        }
        return;
    }
    // constant trip counts: the loops unroll and zs stays in registers (no second read)
    let deg = t - s;
    var zs: array<f32, ONLINE_MAX>;
    var m = zval(s);
    zs[0] = m;
    var sum = 1.0;
    for (var i = 1u; i < ONLINE_MAX; i = i + 1u) {
        if (i < deg) {
            let z = zval(s + i);
            zs[i] = z;
            let hi = z > m;
            // one exp: exp(-(|z - m|)); rescale the sum when z is the new max
            let x = exp(min(z, m) - max(z, m));
            sum = select(sum + x, sum * x + 1.0, hi);
            m = max(m, z);
        }
    }
    for (var i = 0u; i < ONLINE_MAX; i = i + 1u) {
        if (i < deg) {
            result[s + i] = bitcast<u32>(exp(zs[i] - m) / sum);
        }
    }
}

// As softmax_topk_reg (mode 0), for deg <= ONLINE_MAX: constant trip counts, so the loops
// unroll and the z stay in registers between the two passes (one read per edge).
fn softmax_topk_small(s: u32, deg: u32, k: u32) {
    var zs: array<f32, ONLINE_MAX>;
    var a0 = 0.0;
    var a1 = 0.0;
    var a2 = 0.0;
    var a3 = 0.0;
    var i0 = 0u;
    var i1 = 0u;
    var i2 = 0u;
    var i3 = 0u;
    for (var j = 0u; j < ONLINE_MAX; j = j + 1u) {
        if (j < deg) {
            let z = zval(s + j);
            zs[j] = z;
            let b0 = j < 1u || z > a0;
            let b1 = j < 2u || z > a1;
            let b2 = j < 3u || z > a2;
            let b3 = j < 4u || z > a3;
            a3 = select(select(a3, z, b3), a2, b2);
            i3 = select(select(i3, j, b3), i2, b2);
            a2 = select(select(a2, z, b2), a1, b1);
            i2 = select(select(i2, j, b2), i1, b1);
            a1 = select(select(a1, z, b1), a0, b0);
            i1 = select(select(i1, j, b1), i0, b0);
            a0 = select(a0, z, b0);
            i0 = select(i0, j, b0);
        }
    }
    let pz = select(select(select(a3, a2, k == 3u), a1, k == 2u), a0, k == 1u);
    let pj = select(select(select(i3, i2, k == 3u), i1, k == 2u), i0, k == 1u);
    let m = a0;
    var total = 1.0;
    if (k > 1u) {
        total = total + exp(a1 - m);
    }
    if (k > 2u) {
        total = total + exp(a2 - m);
    }
    if (k > 3u) {
        total = total + exp(a3 - m);
    }
    for (var j = 0u; j < ONLINE_MAX; j = j + 1u) {
        if (j < deg) {
            let z = zs[j];
            let kept = z > pz || (z == pz && j <= pj);
            var p = 0.0;
            if (kept) {
                p = exp(z - m) / total;
            }
            result[s + j] = bitcast<u32>(p);
        }
    }
}

// 1 <= k <= 4 < deg: the 4 largest (z desc, e asc) in registers, one read pass, one write pass.
fn softmax_topk_reg(s: u32, t: u32, k: u32) {
    var a0 = 0.0;
    var a1 = 0.0;
    var a2 = 0.0;
    var a3 = 0.0;
    var i0 = 0u;
    var i1 = 0u;
    var i2 = 0u;
    var i3 = 0u;
    var c = 0u;
    for (var e = s; e < t; e = e + 1u) {
        let z = zval(e);
        // edges come in ascending order: a tie ranks after the slot it ties with
        let b0 = c < 1u || z > a0;
        let b1 = c < 2u || z > a1;
        let b2 = c < 3u || z > a2;
        let b3 = c < 4u || z > a3;
        a3 = select(select(a3, z, b3), a2, b2);
        i3 = select(select(i3, e, b3), i2, b2);
        a2 = select(select(a2, z, b2), a1, b1);
        i2 = select(select(i2, e, b2), i1, b1);
        a1 = select(select(a1, z, b1), a0, b0);
        i1 = select(select(i1, e, b1), i0, b0);
        a0 = select(a0, z, b0);
        i0 = select(i0, e, b0);
        c = min(c + 1u, 4u);
    }
    // threshold (pz, pe) = the k-th; m = the first
    let pz = select(select(select(a3, a2, k == 3u), a1, k == 2u), a0, k == 1u);
    let pe = select(select(select(i3, i2, k == 3u), i1, k == 2u), i0, k == 1u);
    if (P.mode == 1u) {
        for (var e = s; e < t; e = e + 1u) {
            let z = zval(e);
            write_out(e, z > pz || (z == pz && e <= pe), 0.0);
        }
        return;
    }
    let m = a0;
    var total = 1.0;
    if (k > 1u) {
        total = total + exp(a1 - m);
    }
    if (k > 2u) {
        total = total + exp(a2 - m);
    }
    if (k > 3u) {
        total = total + exp(a3 - m);
    }
    for (var e = s; e < t; e = e + 1u) {
        let z = zval(e);
        let kept = z > pz || (z == pz && e <= pe);
        var p = 0.0;
        if (kept) {
            p = exp(z - m) / total;
        }
        result[e] = bitcast<u32>(p);
    }
}

@compute @workgroup_size(WG)
fn softmax_small(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    softmax_small_body(thread_index(gid, nwg), false);
}

// The same for 1 <= top_k <= 4 in mode 0 (the host picks it): its own pipeline, so that
// softmax_topk_small's register array does not share a shader with softmax_online's (with
// both in one shader llvmpipe no longer keeps either in registers: 2x slower).
@compute @workgroup_size(WG)
fn softmax_small_k4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    softmax_small_body(thread_index(gid, nwg), true);
}

// k4: this is softmax_small_k4 (top-k in 1..4, mode 0)
fn softmax_small_body(j: u32, k4: bool) {
    if (j >= P.n_nodes) {
        return;
    }
    let s = row_ptr[j];
    let t = row_ptr[j + 1u];
    let deg = t - s;
    if (deg == 0u || deg > P.small_max) {
        return;
    }
    let k = P.top_k;
    let use_k = k != 0u && deg > k;
    if (use_k && k <= 4u) {
        if (k4 && deg <= ONLINE_MAX) {
            softmax_topk_small(s, deg, k);
            return;
        }
        softmax_topk_reg(s, t, k);
        return;
    }
    if (!k4 && !use_k && deg <= ONLINE_MAX) {
        softmax_online(s, t);
        return;
    }
    // threshold element (pz, pe): the k-th in (z desc, e asc) order
    var pz = 0.0;
    var pe = 0u;
    if (use_k) {
        var have = false;
        for (var p = 0u; p < k; p = p + 1u) {
            var bz = 0.0;
            var be = 0u;
            var hb = false;
            for (var e = s; e < t; e = e + 1u) {
                let z = zval(e);
                let after = !have || z < pz || (z == pz && e > pe);
                if (after && (!hb || z > bz)) {
                    bz = z;
                    be = e;
                    hb = true;
                }
            }
            pz = bz;
            pe = be;
            have = true;
        }
    }
    if (P.mode == 1u) {
        for (var e = s; e < t; e = e + 1u) {
            let z = zval(e);
            let kept = !use_k || z > pz || (z == pz && e <= pe);
            write_out(e, kept, 0.0);
        }
        return;
    }
    var m = -f32_max();
    for (var e = s; e < t; e = e + 1u) {
        let z = zval(e);
        let kept = !use_k || z > pz || (z == pz && e <= pe);
        if (kept) {
            m = max(m, z);
        }
    }
    // blocks of 16 terms, block sums accumulated with compensation: the error stays small
    // even if the compiler reassociates the Kahan step away
    var acc = vec2<f32>(0.0, 0.0);
    var blk = 0.0;
    var nb = 0u;
    // exp(z - m) (0 where not kept) goes to `result` and is divided in place afterwards:
    // one exp per edge, and the last pass reads what this one wrote (still in cache)
    for (var e = s; e < t; e = e + 1u) {
        let z = zval(e);
        let kept = !use_k || z > pz || (z == pz && e <= pe);
        var ex = 0.0;
        if (kept) {
            ex = exp(z - m);
            blk = blk + ex;
            nb = nb + 1u;
            if (nb == 16u) {
                acc = kahan_add(acc, blk);
                blk = 0.0;
                nb = 0u;
            }
        }
        result[e] = bitcast<u32>(ex);
    }
    acc = kahan_add(acc, blk);
    let total = acc.x - acc.y;
    for (var e = s; e < t; e = e + 1u) {
        result[e] = bitcast<u32>(bitcast<f32>(result[e]) / total);
    }
}

var<workgroup> counter: array<atomic<u32>, 2>;

// Workgroup-wide sum of `part` (exact, integer). Must be called in uniform control flow.
fn wg_count(part: u32, lid: u32, slot: u32) -> u32 {
    atomicAdd(&counter[slot], part);
    workgroupBarrier();
    let c = atomicLoad(&counter[slot]);
    if (lid == 0u) {
        atomicStore(&counter[1u - slot], 0u);
    }
    workgroupBarrier();
    return c;
}

@compute @workgroup_size(WG)
fn softmax_large(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // WG must be 256 (LWG) for this entry point: the host passes it.
    let w = group_index(wid, nwg);
    if (w >= P.n_large) {
        return;
    }
    let j = large_nodes[w];
    let s = row_ptr[j];
    let t = row_ptr[j + 1u];
    let deg = t - s;
    let k = P.top_k;
    let use_k = k != 0u && deg > k;

    if (lid == 0u) {
        atomicStore(&counter[0], 0u);
        atomicStore(&counter[1], 0u);
    }
    workgroupBarrier();

    var tkey = 0u;          // key of the k-th largest z
    var tidx = 0xffffffffu; // among z with key == tkey, keep local index <= tidx
    var slot = 0u;
    if (use_k) {
        for (var bit = 0u; bit < 32u; bit = bit + 1u) {
            let cand = tkey | (1u << (31u - bit));
            var part = 0u;
            for (var e = s + lid; e < t; e = e + LWG) {
                if (zkey(zval(e)) >= cand) {
                    part = part + 1u;
                }
            }
            let c = wg_count(part, lid, slot);
            slot = 1u - slot;
            tkey = select(tkey, cand, c >= k);
        }
        var part_gt = 0u;
        for (var e = s + lid; e < t; e = e + LWG) {
            if (zkey(zval(e)) > tkey) {
                part_gt = part_gt + 1u;
            }
        }
        let gt = wg_count(part_gt, lid, slot);
        slot = 1u - slot;
        let need = k - gt; // >= 1 ties to keep, lowest edge index first
        let nbits = 32u - countLeadingZeros(deg);
        var x = 0u;
        for (var bi = 0u; bi < nbits; bi = bi + 1u) {
            let cand = x | (1u << (nbits - 1u - bi));
            var part = 0u;
            for (var e = s + lid; e < t; e = e + LWG) {
                if (e - s < cand && zkey(zval(e)) == tkey) {
                    part = part + 1u;
                }
            }
            let c = wg_count(part, lid, slot);
            slot = 1u - slot;
            x = select(x, cand, c < need);
        }
        tidx = x;
    }

    if (P.mode == 1u) {
        for (var e = s + lid; e < t; e = e + LWG) {
            let key = zkey(zval(e));
            let kept = !use_k || key > tkey || (key == tkey && e - s <= tidx);
            write_out(e, kept, 0.0);
        }
        return;
    }

    // max over kept z (a plain max tree in red_a, declared by workgroup_reduce.wgsl)
    var m = -f32_max();
    for (var e = s + lid; e < t; e = e + LWG) {
        let z = zval(e);
        let key = zkey(z);
        let kept = !use_k || key > tkey || (key == tkey && e - s <= tidx);
        if (kept) {
            m = max(m, z);
        }
    }
    red_a[lid] = m;
    workgroupBarrier();
    for (var st = LWG / 2u; st > 0u; st = st >> 1u) {
        if (lid < st) {
            red_a[lid] = max(red_a[lid], red_a[lid + st]);
        }
        workgroupBarrier();
    }
    let mm = red_a[0];
    workgroupBarrier();

    // compensated sum of exp(z - m) over kept
    var acc = vec2<f32>(0.0, 0.0);
    var blk = 0.0;
    var nb = 0u;
    for (var e = s + lid; e < t; e = e + LWG) {
        let z = zval(e);
        let key = zkey(z);
        let kept = !use_k || key > tkey || (key == tkey && e - s <= tidx);
        if (kept) {
            blk = blk + exp(z - mm);
            nb = nb + 1u;
            if (nb == 16u) {
                acc = kahan_add(acc, blk);
                blk = 0.0;
                nb = 0u;
            }
        }
    }
    acc = kahan_add(acc, blk);
    let total = tree_sum(lid, acc);

    for (var e = s + lid; e < t; e = e + LWG) {
        let z = zval(e);
        let key = zkey(z);
        let kept = !use_k || key > tkey || (key == tkey && e - s <= tidx);
        var p = 0.0;
        if (kept) {
            p = exp(z - mm) / total;
        }
        write_out(e, kept, p);
    }
}
