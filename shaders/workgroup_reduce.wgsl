// workgroup_reduce.wgsl: the fixed-order compensated workgroup sum shared by the reduction
// kernels (concatenated after common.wgsl, before the kernel's own file). It declares
// `LWG` and the workgroup arrays `red_a` / `red_b` (2 KiB), which kernels may reuse for
// their own trees (e.g. segment_softmax's max) between calls, and `red_c` (the exact u32
// count tree of count_sum).
//
// Every entry point that calls tree_sum must run with WG == LWG (256), and must call it from
// uniform control flow (it contains barriers; Tint's uniformity analysis checks this).

const LWG: u32 = 256u;

var<workgroup> red_a: array<f32, 256>;
var<workgroup> red_b: array<f32, 256>;

// Sum of the compensated partials acc = (sum, comp) of all LWG invocations, by a fixed binary
// tree (stride LWG/2, LWG/4, ..., 1; kahan_merge at every node): the same bits run to run.
// Every invocation gets the total; reusing red_a / red_b afterwards needs a workgroupBarrier()
// first (invocations may still be reading red_a[0] / red_b[0]).
fn tree_sum(lid: u32, acc: vec2<f32>) -> f32 {
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
    return red_a[0] - red_b[0];
}

var<workgroup> red_c: array<u32, 256>;

// Sum of cnt over the workgroup (exact, so any order gives the same count). Same rules as
// tree_sum: uniform control flow, WG == LWG.
fn count_sum(lid: u32, cnt: u32) -> u32 {
    red_c[lid] = cnt;
    workgroupBarrier();
    for (var st = LWG / 2u; st > 0u; st = st >> 1u) {
        if (lid < st) {
            red_c[lid] = red_c[lid] + red_c[lid + st];
        }
        workgroupBarrier();
    }
    return red_c[0];
}
