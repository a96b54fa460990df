// common.wgsl: helpers shared by every energetic_wgpu kernel (concatenated first).
//
// Conventions:
// * `WG` is the workgroup size, an override constant set at pipeline creation.
// * Dispatches larger than 65,535 workgroups are folded into 2D by the host:
//   the linear thread index is gid.x + gid.y * (nwg.x * WG) and the linear
//   workgroup index is wid.x + wid.y * nwg.x. Every kernel guards its range.
// * No float atomics, no f16, no subgroups: core WGSL only.

override WG: u32 = 64u;

fn thread_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * (nwg.x * WG);
}

fn group_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// Workgroup w of a [rows, cols] grid covered row by row, `blocks` workgroups of `span` items
// per row (blocks = ceil(cols / span)): (row, first column). Kernels whose range is a product
// of sizes (batch x edges) index with this instead of a flat w * span, which wraps past 2^32
// (e.g. B = 257, E = 16.7M); row and column stay below rows and cols + span.
fn block_origin(w: u32, blocks: u32, span: u32) -> vec2<u32> {
    let row = w / blocks;
    return vec2<u32>(row, (w - row * blocks) * span);
}

fn f32_max() -> f32 {
    return bitcast<f32>(0x7f7fffffu);
}

// One step of Kahan summation: (sum, comp) += x; the value is sum - comp. Kernels also sum
// in blocks of 16 terms before compensating, so precision does not depend on the compiler
// keeping the compensation (fast-math reassociation could remove it).
fn kahan_add(acc: vec2<f32>, x: f32) -> vec2<f32> {
    let y = x - acc.y;
    let t = acc.x + y;
    let c = (t - acc.x) - y;
    return vec2<f32>(t, c);
}

// kahan_add on 4 independent lanes: (sum, comp) += x, the value is sum - comp.
fn kahan4(sum: ptr<function, vec4<f32>>, comp: ptr<function, vec4<f32>>, x: vec4<f32>) {
    let y = x - *comp;
    let t = *sum + y;
    *comp = (t - *sum) - y;
    *sum = t;
}

// Combine two compensated sums (s, c) where the value is s - c. Knuth's TwoSum
// keeps the rounding error of the head addition.
fn kahan_merge(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    let s = a.x + b.x;
    let bp = s - a.x;
    let err = (a.x - (s - bp)) + (b.x - bp);
    return vec2<f32>(s, (a.y + b.y) - err);
}
