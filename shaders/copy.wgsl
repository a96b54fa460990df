// copy.wgsl: dst[i] = src[i] for i < n, with vec4 loads/stores (bandwidth reference).
// The last, partial vec4 keeps dst's elements past n unchanged.

struct CopyParams {
    n: u32,       // number of f32 elements
    n_vec: u32,   // ceil(n / 4)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> P: CopyParams;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn copy_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = thread_index(gid, nwg);
    if (i >= P.n_vec) {
        return;
    }
    let v = src[i];
    let first = i * 4u;
    if (first + 4u <= P.n) {
        dst[i] = v;
    } else {
        let old = dst[i];
        let lane = vec4<u32>(first, first + 1u, first + 2u, first + 3u);
        dst[i] = select(old, v, lane < vec4<u32>(P.n));
    }
}
