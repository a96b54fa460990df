// losses.wgsl: mse, cross_entropy and entropy regularization (docs/definitions.md §5) with their gradients.
// Losses are fixed-order two-pass reductions: pass 1 (<loss>_partials) has workgroup w cover
// elements [w*WG*ITEMS, (w+1)*WG*ITEMS), thread t summing t, t+WG, ... in order (compensated),
// then a fixed tree; partials[2w] = sum, partials[2w+1] = count (u32 bits, mse only).
// Pass 2 (loss_final, one workgroup) sums the partials in order into loss[0]:
//   mode 0 (mse): loss = sum / count (0 when count = 0) and partials[2*n_parts] = 2 / count
//                 (0 when count = 0), the gradient scale read by mse_grad;
//   mode 1:       loss = sum * mul / div.
// Gradients: without a mask the mse count is n, so mse_partials writes the gradient
// (pred - target) * (2 / n) itself (flags bit 1); with a mask mse_grad_counted runs after
// mse_partials: every workgroup sums the n_parts count partials itself (exact integers: every
// workgroup gets the same count) and writes the gradient of its elements (the host uses it
// while n_parts is small; beyond, mse_grad after loss_final); ce_partials and ent_partials
// write theirs directly. The loss of a train step is reduced by adamw_prepare instead of
// loss_final (adamw.wgsl), with the same code and order: the same bits.
// The trees are workgroup_reduce.wgsl's tree_sum and count_sum.
// An array larger than one binding (a batch split into chunks) is reduced by one partials
// dispatch per range of whole workgroups (n elements from workgroup w0 on, bound from there):
// every workgroup sums the same elements as unsplit, so the partials and the loss are the same bits.
// WG must be 256 (LWG) for the reductions.

struct LossParams {
    n: u32,
    flags: u32,     // bit 0: mask given (mse); bit 1: mse_partials writes the gradient (no mask)
    n_parts: u32,
    mode: u32,
    mul: f32,       // ce: -1; entropy: -lam
    div: f32,       // ce: B; entropy: 1
    eps: f32,       // ce clamp
    lam: f32,       // entropy: lam
    w0: u32,        // first workgroup of this dispatch in the whole array (batch chunks)
    n_all: u32,     // elements of the whole array (n when not split)
    _pad0: u32,
    _pad1: u32,
}

const ITEMS: u32 = 16u;

@group(0) @binding(0) var<uniform> P: LossParams;
@group(0) @binding(1) var<storage, read> pred: array<f32>;
@group(0) @binding(2) var<storage, read> target_: array<f32>;
@group(0) @binding(3) var<storage, read> mask: array<u32>;
@group(0) @binding(4) var<storage, read_write> partials: array<f32>;
@group(0) @binding(5) var<storage, read_write> loss: array<f32>;
@group(0) @binding(6) var<storage, read_write> grad: array<f32>;

fn masked(i: u32) -> bool {
    return (P.flags & 1u) == 0u || mask[i] != 0u;
}

@compute @workgroup_size(WG)
fn mse_partials(
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
    var cnt = 0u;
    let fused = (P.flags & 2u) != 0u;
    let scale = 2.0 / f32(P.n_all);  // the count when there is no mask: loss_final's 2 / count
    for (var r = 0u; r < ITEMS; r = r + 1u) {
        let i = base + lid + r * LWG;
        if (i < P.n && masked(i)) {
            let d = pred[i] - target_[i];
            acc = kahan_add(acc, d * d);
            cnt = cnt + 1u;
            if (fused) {
                grad[i] = d * scale;
            }
        }
    }
    let total = tree_sum(lid, acc);
    let c = count_sum(lid, cnt);
    if (lid == 0u) {
        partials[2u * (P.w0 + w)] = total;
        partials[2u * (P.w0 + w) + 1u] = bitcast<f32>(c);
    }
}

@compute @workgroup_size(WG)
fn loss_final(@builtin(local_invocation_index) lid: u32) {
    var acc = vec2<f32>(0.0, 0.0);
    var cnt = 0u;
    for (var w = lid; w < P.n_parts; w = w + LWG) {
        acc = kahan_add(acc, partials[2u * w]);
        if (P.mode == 0u) {
            cnt = cnt + bitcast<u32>(partials[2u * w + 1u]);
        }
    }
    let total = tree_sum(lid, acc);
    let c = count_sum(lid, cnt);
    if (lid == 0u) {
        if (P.mode == 0u) {
            if (c == 0u) {
                loss[0] = 0.0;
                partials[2u * P.n_parts] = 0.0;
            } else {
                loss[0] = total / f32(c);
                partials[2u * P.n_parts] = 2.0 / f32(c);
            }
        } else {
            loss[0] = total * P.mul / P.div;
        }
    }
}

@compute @workgroup_size(WG)
fn mse_grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = thread_index(gid, nwg);
    if (i >= P.n) {
        return;
    }
    var d = 0.0;
    if (masked(i)) {
        d = pred[i] - target_[i];
    }
    grad[i] = d * partials[2u * P.n_parts];
}

@compute @workgroup_size(WG)
fn mse_grad_counted(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    var cnt = 0u;
    for (var v = lid; v < P.n_parts; v = v + LWG) {
        cnt = cnt + bitcast<u32>(partials[2u * v + 1u]);
    }
    let c = count_sum(lid, cnt);
    var scale = 0.0;
    if (c != 0u) {
        scale = 2.0 / f32(c);  // loss_final's gradient scale, bit for bit
    }
    let base = group_index(wid, nwg) * LWG * ITEMS;
    for (var r = 0u; r < ITEMS; r = r + 1u) {
        let i = base + lid + r * LWG;
        if (i < P.n) {
            var d = 0.0;
            if (masked(i)) {
                d = pred[i] - target_[i];
            }
            grad[i] = d * scale;
        }
    }
}

@compute @workgroup_size(WG)
fn ce_partials(
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
            let p = pred[i];
            let t = target_[i];
            let c = max(p, P.eps);
            acc = kahan_add(acc, t * log(c));
            var g = 0.0;
            if (p >= P.eps) {
                g = -t / c;
            }
            grad[i] = g / P.div;
        }
    }
    let total = tree_sum(lid, acc);
    if (lid == 0u) {
        partials[2u * (P.w0 + w)] = total;
    }
}

@compute @workgroup_size(WG)
fn ent_partials(
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
            let p = pred[i];
            var g = 0.0;
            if (p > 0.0) {
                let lp = log(p);
                acc = kahan_add(acc, p * lp);
                g = -P.lam * (lp + 1.0);
            }
            grad[i] = g;
        }
    }
    let total = tree_sum(lid, acc);
    if (lid == 0u) {
        partials[2u * (P.w0 + w)] = total;
    }
}
