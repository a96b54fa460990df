// metrics.wgsl: the five step metrics (docs/definitions.md §2) by a fixed-order two-pass reduction.
// Pass 1 (metrics_partials) runs n_total workgroups over blocks of WG * ITEMS = 4096 items; thread
// lid takes the items lid + r*WG (r < ITEMS) of each block and accumulates
//   te: next[i]                          (flat i = w*4096 + item < B*N)
//   an: active && energies != 0          (flat i < B*N)
//   ae: pi[e] > 0 && active[b, src[e]]   (the [B, E] grid: grid_blocks = B * edge_blocks blocks,
//   mf: max of x[b, src[e]] * pi[e]       edge_blocks = ceil(E / 4096) per row; workgroup w takes
//                                         blocks w, w + n_total, ...; block_origin gives (b, e0))
//   h : -pi log pi over edges            (flat e < E)   (mean over non-empty segments = sum / count)
// into partials[w*8 .. w*8+5]; n_total >= ceil(B*N / 4096) and >= edge_blocks, and at most what
// the partials buffer may hold (the host caps it), so B * E past 2^32 neither wraps nor needs
// more partials than one binding holds.
// Pass 2 (metrics_final) sums the partials in order (te over w < ceil(B*N / 4096), h over
// w < edge_blocks: the same terms in the same order whatever n_total is) and divides.
// A batch whose [B, N] arrays are over one binding (batch_chunks.py) runs pass 1 as several
// dispatches that each write some fields of a range of slots, the values the unsplit dispatch
// writes there: flat dispatches (fields bits 0 and 2) over ranges of whole blocks of B*N, with
// energies, next_e and act_mask bound from block w0; grid dispatches (bit 1) over the blocks of
// a chunk of rows (n_total >= grid_blocks then: one block per slot), energies and act_mask
// bound from an aligned offset before row row0, which lies e0 elements into the range.
// A graph cut into edge windows (edge_windows.py) also runs h (bit 2) over ranges of whole
// blocks of E and the grid (one block per slot) per batch row and window, pi and src bound as
// the window's ranges from edge pbase; a block across two windows runs on copies of its pi and
// src (pbase its first edge).
// WG must be 256.

struct MetricParams {
    batch: u32,
    n_nodes: u32,
    n_edges: u32,
    has_active: u32,
    alpha: f32,
    n_total: u32,      // workgroups of metrics_partials (partials written); the same for the final pass
    n_nonempty: u32,   // number of non-empty segments
    edge_blocks: u32,  // ceil(n_edges / (WG * ITEMS)): blocks per batch row of the [B, E] grid
    grid_blocks: u32,  // batch * edge_blocks (a grid dispatch of a split batch: its last block + 1)
    w0: u32,           // first partials slot of this dispatch (0 when not split)
    fields: u32,       // bit 0: write te, an; bit 1: write ae, mf; bit 2: write h (7 when not split)
    row0: u32,         // first batch row of the bound energies / act_mask range
    e0: u32,           // element of that range where row row0 (flat: block w0) starts
    pbase: u32,        // pi and src are bound from edge pbase (an edge window's range; else 0)
    _pad1: u32,
    _pad2: u32,
}

const LWG: u32 = 256u;
const ITEMS: u32 = 16u;

@group(0) @binding(0) var<uniform> P: MetricParams;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read> pi: array<f32>;
@group(0) @binding(3) var<storage, read> energies: array<f32>;
@group(0) @binding(4) var<storage, read> next_e: array<f32>;
@group(0) @binding(5) var<storage, read> act_mask: array<u32>;
@group(0) @binding(6) var<storage, read_write> partials: array<f32>;

var<workgroup> r_te: array<vec2<f32>, 256>;
var<workgroup> r_an: array<f32, 256>;
var<workgroup> r_ae: array<f32, 256>;
var<workgroup> r_mf: array<f32, 256>;
var<workgroup> r_h: array<vec2<f32>, 256>;

fn is_active(j: u32) -> bool {
    return P.has_active == 0u || act_mask[j] != 0u;
}

fn tree(lid: u32) {
    workgroupBarrier();
    for (var st = LWG / 2u; st > 0u; st = st >> 1u) {
        if (lid < st) {
            r_te[lid] = kahan_merge(r_te[lid], r_te[lid + st]);
            r_an[lid] = r_an[lid] + r_an[lid + st];
            r_ae[lid] = r_ae[lid] + r_ae[lid + st];
            r_mf[lid] = max(r_mf[lid], r_mf[lid + st]);
            r_h[lid] = kahan_merge(r_h[lid], r_h[lid + st]);
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(WG)
fn metrics_partials(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let w = P.w0 + group_index(wid, nwg);
    if (w >= P.n_total) {
        return;
    }
    let span = LWG * ITEMS;
    let bn = P.batch * P.n_nodes;  // the size of energies: fits in u32
    // flat ranges (B*N and E items) only for the workgroups that reach them: w * span stays
    // below B*N + span and E + span
    let flat = (P.fields & 1u) != 0u;
    let flat_bn = flat && w < (bn + span - 1u) / span;
    let flat_e = (P.fields & 4u) != 0u && w < P.edge_blocks;
    let base = w * span;
    let local = (w - P.w0) * span;  // the block in the bound energies / next_e / act_mask range
    var te = vec2<f32>(0.0, 0.0);
    var an = 0.0;
    var ae = 0.0;
    var mf = -f32_max();
    var h = vec2<f32>(0.0, 0.0);
    for (var r = 0u; r < ITEMS; r = r + 1u) {
        let i = base + lid + r * LWG;
        if (flat_bn && i < bn) {
            let li = local + lid + r * LWG;
            te = kahan_add(te, next_e[li]);
            if (is_active(li) && energies[li] != 0.0) {
                an = an + 1.0;
            }
        }
        if (flat_e && i < P.n_edges) {
            let p = pi[i - P.pbase];
            if (p > 0.0) {
                h = kahan_add(h, -(p * log(p)));
            }
        }
    }
    // counts and a max: the same bits whichever workgroup takes a block
    var g_end = P.grid_blocks;
    if ((P.fields & 2u) == 0u) {
        g_end = 0u;
    }
    for (var g = w; g < g_end; g = g + P.n_total) {
        let rc = block_origin(g, P.edge_blocks, span);
        let row = P.e0 + (rc.x - P.row0) * P.n_nodes;
        for (var r = 0u; r < ITEMS; r = r + 1u) {
            let e = rc.y + lid + r * LWG;
            if (e < P.n_edges) {
                let j = row + src[e - P.pbase];
                let p = pi[e - P.pbase];
                var x = energies[j] * P.alpha;
                if (!is_active(j)) {
                    x = 0.0;
                } else if (p > 0.0) {
                    ae = ae + 1.0;
                }
                mf = max(mf, x * p);
            }
        }
    }
    r_te[lid] = te;
    r_an[lid] = an;
    r_ae[lid] = ae;
    r_mf[lid] = mf;
    r_h[lid] = h;
    tree(lid);
    if (lid == 0u) {
        let o = w * 8u;
        if (flat) {
            partials[o] = r_te[0].x - r_te[0].y;
            partials[o + 1u] = r_an[0];
        }
        if ((P.fields & 4u) != 0u) {
            partials[o + 4u] = r_h[0].x - r_h[0].y;
        }
        if ((P.fields & 2u) != 0u) {
            partials[o + 2u] = r_ae[0];
            partials[o + 3u] = r_mf[0];
        }
    }
}

// metrics_final reads `partials` (binding 6) and writes `metrics_out` (binding 7).
@group(0) @binding(7) var<storage, read_write> metrics_out: array<f32>;

@compute @workgroup_size(WG)
fn metrics_final(@builtin(local_invocation_index) lid: u32) {
    var te = vec2<f32>(0.0, 0.0);
    var an = 0.0;
    var ae = 0.0;
    var mf = -f32_max();
    var h = vec2<f32>(0.0, 0.0);
    let bn_blocks = (P.batch * P.n_nodes + LWG * ITEMS - 1u) / (LWG * ITEMS);
    for (var w = lid; w < P.n_total; w = w + LWG) {
        let o = w * 8u;
        if (w < bn_blocks) {
            te = kahan_add(te, partials[o]);
        }
        an = an + partials[o + 1u];
        ae = ae + partials[o + 2u];
        mf = max(mf, partials[o + 3u]);
        if (w < P.edge_blocks) {
            h = kahan_add(h, partials[o + 4u]);
        }
    }
    r_te[lid] = te;
    r_an[lid] = an;
    r_ae[lid] = ae;
    r_mf[lid] = mf;
    r_h[lid] = h;
    tree(lid);
    if (lid == 0u) {
        if (P.batch > 0u) {
            let fb = f32(P.batch);
            metrics_out[0] = (r_te[0].x - r_te[0].y) / fb;
            metrics_out[1] = r_an[0] / fb;
            metrics_out[2] = r_ae[0] / fb;
        } else {
            metrics_out[0] = 0.0;
            metrics_out[1] = 0.0;
            metrics_out[2] = 0.0;
        }
        if (P.batch > 0u && P.n_edges > 0u) {
            metrics_out[3] = r_mf[0];
        } else {
            metrics_out[3] = 0.0;
        }
        if (P.n_nonempty > 0u) {
            metrics_out[4] = (r_h[0].x - r_h[0].y) / f32(P.n_nonempty);
        } else {
            metrics_out[4] = 0.0;
        }
    }
}
