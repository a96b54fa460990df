// edge_logits.wgsl: logit[e] = dot(q[src[e]], k[col_idx[e]]) + bias[e], thread per edge, rows
// read as vec4 (row_dot.wgsl). The forward itself does not store logits (edge_probs.wgsl computes
// the same values in registers); this kernel serves the public edge_logits op. Edge t of the
// dispatch is element e0 + t of the bound [E] ranges (an edge window, graph_data.EdgeWindows:
// ranges bound from an aligned offset; 0 otherwise). q and k past one binding (node_rows.py):
// q bound from the window's node range (q_shift) and k's rows gathered per edge (gathered).

struct LogitParams {
    n_edges: u32,
    dim: u32,
    e0: u32,
    gathered: u32,  // 1: k's row of edge t is row e0 + t of the bound k (node_rows.py), else col_idx[e]
    q_shift: u32,   // q's row j starts at float j * dim - q_shift (mod 2^32): q bound from a node range
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> P: LogitParams;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read> col_idx: array<u32>;
@group(0) @binding(3) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> bias: array<f32>;
@group(0) @binding(6) var<storage, read_write> logits: array<f32>;

@compute @workgroup_size(WG)
fn edge_logits(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = thread_index(gid, nwg);
    if (t >= P.n_edges) {
        return;
    }
    let e = P.e0 + t;
    var kr = e;
    if (P.gathered == 0u) {
        kr = col_idx[e];
    }
    logits[e] = row_dot(src[e] * P.dim - P.q_shift, kr * P.dim, P.dim) + bias[e];
}
