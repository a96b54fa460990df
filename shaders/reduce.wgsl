// reduce.wgsl: fixed-order two-pass sum of squares (used for gradient norms).
// Pass 1 (sumsq_partials): workgroup w covers elements [w*WG*ITEMS, (w+1)*WG*ITEMS); thread t
// sums x^2 over t, t+WG, ... in order, then a fixed tree; partials[out_offset + w].
// Pass 2 (sum_final): one workgroup sums partials[0..n) the same way into result[0].
// The tree is workgroup_reduce.wgsl's tree_sum. WG must be 256 (LWG) for both entry points.

struct ReduceParams {
    n: u32,
    out_offset: u32,
    _pad0: u32,
    _pad1: u32,
}

const ITEMS: u32 = 16u;

@group(0) @binding(0) var<uniform> P: ReduceParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> result: array<f32>;

@compute @workgroup_size(WG)
fn sumsq_partials(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let w = group_index(wid, nwg);
    let base = w * LWG * ITEMS;
    if (base >= P.n) {
        return;
    }
    var acc = vec2<f32>(0.0, 0.0);
    for (var r = 0u; r < ITEMS; r = r + 1u) {
        let i = base + lid + r * LWG;
        if (i < P.n) {
            let v = x[i];
            acc = kahan_add(acc, v * v);
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
