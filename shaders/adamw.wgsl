// adamw.wgsl: one clipped AdamW step on the device (docs/definitions.md §6), no readback.
//
// adamw_prepare (one workgroup of 256): total = fixed-order sum of the sum-of-squares partials
//   of every gradient (reduce.wgsl's sumsq_partials or segment_backward.wgsl wrote them);
//   norm = sqrt(total); with has_loss = 2 it also finishes the step's mse loss from
//   mse_partials' partials (loss_parts, n_loss pairs) — loss_final's code in loss_final's
//   order, so the same bits — and writes it to loss_io[0];
//   coef = min(1, max_norm / (norm + 1e-6)) when clipping (else 1); t = step[0] + 1 is stored
//   back; bias corrections bc = 1 - beta^t = -expm1(t * ln beta) (expm1 by its series for
//   |x| < 0.5: 1 - beta^t for t = 1, beta2 = 0.999 keeps full relative precision).
//   scal = [norm, coef, bc1, bc2, skip]; norm_out[0] = norm.
//   Non-finite guard (torch GradScaler's found_inf): when the sum of squares (hence the norm)
//   or, with has_loss, loss_io[0] is NaN or +-inf, the step is skipped: t is not advanced,
//   scal[4] = 1 makes both update kernels return without writing, skip_out[0] = 1. With
//   `counters`, step_count = [t, consecutive skips, total skips]: a skip adds 1 to both, an
//   applied update resets the consecutive count. Finiteness is tested on the bits (exponent
//   all ones), which no compiler rewrites away.
// adamw_update (thread per element of one parameter array):
//   g = grad * coef; p *= 1 - lr*wd; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g g;
//   p -= lr * (m / bc1) / (sqrt(v / bc2) + eps)
//   lr and 1 - lr*wd come from slot `slot` of the `hyper` ring (written by the host with
//   queue.write_buffer) so that a changing learning rate allocates nothing.

struct PrepareParams {
    n_parts: u32,
    clip: u32,       // 1: clip to max_norm
    has_loss: u32,   // 1: loss_io[0] is checked by the guard too; 2: computed from loss_parts first
    counters: u32,   // 1: step_count also holds [consecutive skips, total skips]
    max_norm: f32,
    log_b1: f32,     // ln(beta1) (a large negative number for beta1 = 0)
    log_b2: f32,
    n_loss: u32,     // has_loss = 2: mse_partials' workgroup count
}

struct UpdateParams {
    n: u32,
    slot: u32,
    e0: u32,         // element i of the dispatch is element e0 + i of the bound ranges (0: whole arrays)
    _pad1: u32,
    b1: f32,
    omb1: f32,       // 1 - beta1 (rounded once, as the reference does)
    b2: f32,
    omb2: f32,
    eps: f32,
    _pad2: f32,
    _pad3: f32,
    _pad4: f32,
}

@group(0) @binding(0) var<uniform> PP: PrepareParams;
@group(0) @binding(1) var<storage, read> partials: array<f32>;
@group(0) @binding(2) var<storage, read_write> step_count: array<f32>;
@group(0) @binding(3) var<storage, read_write> scal_w: array<f32>;
@group(0) @binding(4) var<storage, read_write> norm_out: array<f32>;
@group(0) @binding(21) var<storage, read_write> loss_io: array<f32>;
@group(0) @binding(22) var<storage, read_write> skip_out: array<f32>;
@group(0) @binding(23) var<storage, read> loss_parts: array<f32>;

// false for NaN and +-inf: the exponent bits are all ones
fn is_finite_(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

fn expm1_(x: f32) -> f32 {
    if (abs(x) < 0.5) {
        // Horner form of x + x^2/2! + ... + x^12/12!
        var s = 1.0;
        for (var k = 12; k >= 2; k = k - 1) {
            s = 1.0 + s * x / f32(k);
        }
        return x * s;
    }
    return exp(x) - 1.0;
}

// loss_final (losses.wgsl, mode 0) on loss_parts: sum / count, 0 when count = 0
fn mse_loss(lid: u32) -> f32 {
    var acc = vec2<f32>(0.0, 0.0);
    var cnt = 0u;
    for (var w = lid; w < PP.n_loss; w = w + LWG) {
        acc = kahan_add(acc, loss_parts[2u * w]);
        cnt = cnt + bitcast<u32>(loss_parts[2u * w + 1u]);
    }
    let total = tree_sum(lid, acc);
    let c = count_sum(lid, cnt);
    if (c == 0u) {
        return 0.0;
    }
    return total / f32(c);
}

@compute @workgroup_size(WG)
fn adamw_prepare(@builtin(local_invocation_index) lid: u32) {
    var acc = vec2<f32>(0.0, 0.0);
    for (var i = lid; i < PP.n_parts; i = i + LWG) {
        acc = kahan_add(acc, partials[i]);
    }
    let total = tree_sum(lid, acc);
    var loss = 0.0;
    if (PP.has_loss == 2u) {
        workgroupBarrier();  // every invocation has read tree_sum's result
        loss = mse_loss(lid);
    }
    if (lid == 0u) {
        var bad = !is_finite_(total);
        if (PP.has_loss == 2u) {
            loss_io[0] = loss;
        }
        if (PP.has_loss != 0u) {
            bad = bad || !is_finite_(loss_io[0]);
        }
        // a non-finite total is reported as it is (max(NaN, 0) may drop the NaN)
        let norm = select(sqrt(max(total, 0.0)), total, !is_finite_(total));
        scal_w[0] = norm;
        norm_out[0] = norm;
        if (bad) {
            if (PP.counters != 0u) {
                step_count[1] = step_count[1] + 1.0;
                step_count[2] = step_count[2] + 1.0;
            }
            scal_w[1] = 0.0;
            scal_w[2] = 1.0;
            scal_w[3] = 1.0;
            scal_w[4] = 1.0;
            skip_out[0] = 1.0;
            return;
        }
        var coef = 1.0;
        if (PP.clip != 0u) {
            coef = min(1.0, PP.max_norm / (norm + 1e-6));
        }
        let t = step_count[0] + 1.0;
        step_count[0] = t;
        if (PP.counters != 0u) {
            step_count[1] = 0.0;
        }
        scal_w[1] = coef;
        scal_w[2] = -expm1_(t * PP.log_b1);
        scal_w[3] = -expm1_(t * PP.log_b2);
        scal_w[4] = 0.0;
        skip_out[0] = 0.0;
    }
}

// One AdamW element update, shared by both update kernels (same operations in the same order):
// returns (p, m, v) from p0, g0 (unclipped gradient), m0, v0 and the step's scalars.
fn adamw_element(p0: f32, g0: f32, m0: f32, v0: f32, coef: f32, wdf: f32, lr: f32,
                 b1: f32, omb1: f32, b2: f32, omb2: f32, eps: f32, bc1: f32, bc2: f32) -> vec3<f32> {
    let g = g0 * coef;
    var p = p0 * wdf;
    let m = b1 * m0 + omb1 * g;
    let v = b2 * v0 + omb2 * g * g;
    p = p - lr * (m / bc1) / (sqrt(v / bc2) + eps);
    return vec3<f32>(p, m, v);
}

@group(0) @binding(5) var<uniform> UP: UpdateParams;
@group(0) @binding(6) var<storage, read_write> param: array<f32>;
@group(0) @binding(7) var<storage, read> grad: array<f32>;
@group(0) @binding(8) var<storage, read_write> exp_avg: array<f32>;
@group(0) @binding(9) var<storage, read_write> exp_avg_sq: array<f32>;
@group(0) @binding(10) var<storage, read> scal: array<f32>;
@group(0) @binding(11) var<storage, read> hyper: array<f32>;

@compute @workgroup_size(WG)
fn adamw_update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = thread_index(gid, nwg);
    if (t >= UP.n || scal[4] != 0.0) {
        return;  // past the end, or a step skipped by the guard
    }
    let i = UP.e0 + t;
    let r = adamw_element(param[i], grad[i], exp_avg[i], exp_avg_sq[i], scal[1], hyper[2u * UP.slot + 1u],
                          hyper[2u * UP.slot], UP.b1, UP.omb1, UP.b2, UP.omb2, UP.eps, scal[2], scal[3]);
    exp_avg[i] = r.y;
    exp_avg_sq[i] = r.z;
    param[i] = r.x;
}

// adamw_update_packed (thread per element of one flat buffer holding every parameter): the
// parameters, m and v are each one flat buffer with the same layout — region r (r < 3) at
// element offset FP.off[r], FP.len[r] elements (padding between regions is skipped); the
// gradients stay separate arrays (grad_r, r = 0, 1, 2). Same arithmetic, in the same order,
// as adamw_update: one dispatch updates every parameter.
struct PackedParams {
    n: u32,          // end of the last region (elements)
    slot: u32,
    _pad0: u32,
    _pad1: u32,
    b1: f32,
    omb1: f32,
    b2: f32,
    omb2: f32,
    eps: f32,
    _pad2: f32,
    _pad3: f32,
    _pad4: f32,
    off: vec4<u32>,  // region offsets (elements); an absent region has off = n
    len: vec4<u32>,  // region lengths (elements)
}

@group(0) @binding(12) var<uniform> FP: PackedParams;
@group(0) @binding(13) var<storage, read_write> p_flat: array<f32>;
@group(0) @binding(14) var<storage, read_write> m_flat: array<f32>;
@group(0) @binding(15) var<storage, read_write> v_flat: array<f32>;
@group(0) @binding(16) var<storage, read> grad0: array<f32>;
@group(0) @binding(17) var<storage, read> grad1: array<f32>;
@group(0) @binding(18) var<storage, read> grad2: array<f32>;
@group(0) @binding(19) var<storage, read> scal_p: array<f32>;
@group(0) @binding(20) var<storage, read> hyper_p: array<f32>;

@compute @workgroup_size(WG)
fn adamw_update_packed(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = thread_index(gid, nwg);
    if (i >= FP.n || scal_p[4] != 0.0) {
        return;  // past the end, or a step skipped by the guard
    }
    var r = 0u;
    if (i >= FP.off.z) {
        r = 2u;
    } else if (i >= FP.off.y) {
        r = 1u;
    }
    let j = i - FP.off[r];
    if (j >= FP.len[r]) {
        return;  // padding between regions
    }
    var gr: f32;
    if (r == 0u) {
        gr = grad0[j];
    } else if (r == 1u) {
        gr = grad1[j];
    } else {
        gr = grad2[j];
    }
    let u = adamw_element(p_flat[i], gr, m_flat[i], v_flat[i], scal_p[1], hyper_p[2u * FP.slot + 1u],
                          hyper_p[2u * FP.slot], FP.b1, FP.omb1, FP.b2, FP.omb2, FP.eps, scal_p[2], scal_p[3]);
    m_flat[i] = u.y;
    v_flat[i] = u.z;
    p_flat[i] = u.x;
}
