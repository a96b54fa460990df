// reduce.wgsl: fixed-order two-pass sum of squares (used for gradient norms).
// Pass 1 (sumsq_partials): up to three arrays x (n elements), x1 (n1), x2 (n2) in one dispatch:
// the first ceil(n / (WG*ITEMS)) workgroups cover x, the next ceil(n1 / ...) x1, the rest x2.
// A workgroup's local index v covers elements [v*WG*ITEMS, (v+1)*WG*ITEMS) of its array;
// thread t sums x^2 over t, t+WG, ... in order, then a fixed tree; result[out_offset + w] for
// workgroup w. (The same partials, bit for bit, as one dispatch per array.)
// Pass 2 (sum_final): one workgroup sums partials[0..n) the same way into result[0].
// The tree is workgroup_reduce.wgsl's tree_sum. WG must be 256 (LWG) for both entry points.

struct ReduceParams {
    n: u32,
    out_offset: u32,
    n1: u32,  // sumsq_partials: elements of x1 (0: none)
    n2: u32,  // sumsq_partials: elements of x2 (0: none)
}

const ITEMS: u32 = 16u;

@group(0) @binding(0) var<uniform> P: ReduceParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> result: array<f32>;
@group(0) @binding(3) var<storage, read> x1: array<f32>;
@group(0) @binding(4) var<storage, read> x2: array<f32>;

fn load_of(which: u32, i: u32) -> f32 {
    if (which == 0u) {
        return x[i];
    }
    if (which == 1u) {
        return x1[i];
    }
    return x2[i];
}

@compute @workgroup_size(WG)
fn sumsq_partials(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let w = group_index(wid, nwg);
    let span = LWG * ITEMS;
    let c0 = (P.n + span - 1u) / span;
    let c1 = (P.n1 + span - 1u) / span;
    var which = 0u;
    var v = w;
    var n = P.n;
    if (w >= c0 + c1) {
        which = 2u;
        v = w - c0 - c1;
        n = P.n2;
    } else if (w >= c0) {
        which = 1u;
        v = w - c0;
        n = P.n1;
    }
    let base = v * span;
    if (base >= n) {
        return;
    }
    var acc = vec2<f32>(0.0, 0.0);
    for (var r = 0u; r < ITEMS; r = r + 1u) {
        let i = base + lid + r * LWG;
        if (i < n) {
            let e = load_of(which, i);
            acc = kahan_add(acc, e * e);
        }
    }
    let total = tree_sum(lid, acc);
    if (lid == 0u) {
        result[P.out_offset + w] = total;
    }
}

@compute @workgroup_size(WG)
fn sum_final(@builtin(local_invocation_index) lid: u32) {
    var acc = vec2<f32>(0.0, 0.0);
    for (var i = lid; i < P.n; i = i + LWG) {
        acc = kahan_add(acc, x[i]);
    }
    let total = tree_sum(lid, acc);
    if (lid == 0u) {
        result[P.out_offset] = total;
    }
}
