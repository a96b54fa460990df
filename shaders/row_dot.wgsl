// row_dot.wgsl: dot products of float rows read as vec4 (concatenated after common.wgsl, before
// the kernel's own file). The including file binds `q` and `k` as array<vec4<f32>> over [N, dim]
// row-major floats; a binding always covers a whole number of vec4s.
//
// Rows start at float qb = a * dim and kb = b * dim. When dim % 4 == 0 every row is vec4
// aligned: dim / 4 vec4 loads per row. Otherwise the 4 floats at an unaligned index are
// assembled from the two vec4s around them and the lanes past dim are masked (before the sum,
// so whatever lies beyond the row never reaches the result). Either way component c of the
// accumulator sums the products of row entries c, c + 4, c + 8, ... in order, and the dot is
// (x + y) + (z + w): the same bits for the same rows in every kernel that calls it.

fn shift4(lo: vec4<f32>, hi: vec4<f32>, r: u32) -> vec4<f32> {
    if (r == 1u) {
        return vec4<f32>(lo.yzw, hi.x);
    }
    if (r == 2u) {
        return vec4<f32>(lo.zw, hi.xy);
    }
    return vec4<f32>(lo.w, hi.xyz);
}

// q floats i..i+3 (i not a multiple of 4); the vec4 after the last is clamped to the binding
// (its lanes are past the data and masked by the caller)
fn q_at(i: u32) -> vec4<f32> {
    let v = i >> 2u;
    return shift4(q[v], q[min(v + 1u, arrayLength(&q) - 1u)], i & 3u);
}

fn k_at(i: u32) -> vec4<f32> {
    let v = i >> 2u;
    return shift4(k[v], k[min(v + 1u, arrayLength(&k) - 1u)], i & 3u);
}

// dot(q[qb .. qb + dim], k[kb .. kb + dim]); qb and kb are float indices (row * dim)
fn row_dot(qb: u32, kb: u32, dim: u32) -> f32 {
    var acc = vec4<f32>(0.0);
    if ((dim & 3u) == 0u) {
        let q0 = qb >> 2u;
        let k0 = kb >> 2u;
        for (var c = 0u; c < (dim >> 2u); c = c + 1u) {
            acc = acc + q[q0 + c] * k[k0 + c];
        }
    } else {
        for (var c = 0u; c < dim; c = c + 4u) {
            var qv: vec4<f32>;
            var kv: vec4<f32>;
            if (((qb + c) & 3u) == 0u) {
                qv = q[(qb + c) >> 2u];
            } else {
                qv = q_at(qb + c);
            }
            if (((kb + c) & 3u) == 0u) {
                kv = k[(kb + c) >> 2u];
            } else {
                kv = k_at(kb + c);
            }
            let live = vec4<u32>(c) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(dim);
            acc = acc + select(vec4<f32>(0.0), qv * kv, live);
        }
    }
    return (acc.x + acc.y) + (acc.z + acc.w);
}
