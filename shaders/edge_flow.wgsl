// edge_flow.wgsl: flow[b, e] = x[b, src[e]] * pi[e] with x = act_mask ? energies * alpha : 0.
// Workgroup w covers row b and edges [c, c + WG) of it (block_origin with edge_blocks =
// ceil(E / WG) workgroups per row): no flat index b * E + e is formed before it is known to
// lie in the output, so B * E past 2^32 cannot wrap.
// A flow larger than one binding is written in batch chunks: a dispatch covers rows
// [row0, row0 + batch) of energies / act_mask, and `flow` is bound from an aligned offset
// before row row0, which lies out0 elements into the bound range. On a graph cut into edge
// windows (edge_windows.py) a dispatch covers one row of one window: n_edges of its edges,
// src and pi bound as the window's ranges (its first edge at eoff), flow as that row's part.

struct FlowParams {
    batch: u32,        // rows of this dispatch
    n_nodes: u32,
    n_edges: u32,
    has_active: u32,
    alpha: f32,
    edge_blocks: u32,  // ceil(n_edges / WG)
    row0: u32,         // first batch row of this dispatch
    out0: u32,         // element of the bound flow range where row row0 starts
    e0: u32,           // energies / act_mask bound in row ranges (over one binding): the element
                       // of the range where row row0 starts (then row0 = 0); else 0
    eoff: u32,         // src / pi bound as an edge window's ranges: where its first edge lies; else 0
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> P: FlowParams;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read> pi: array<f32>;
@group(0) @binding(3) var<storage, read> energies: array<f32>;
@group(0) @binding(4) var<storage, read> act_mask: array<u32>;
@group(0) @binding(5) var<storage, read_write> flow: array<f32>;

@compute @workgroup_size(WG)
fn edge_flow(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let rc = block_origin(group_index(wid, nwg), P.edge_blocks, WG);
    let b = rc.x;
    let e = rc.y + lid;
    if (b >= P.batch || e >= P.n_edges) {
        return;
    }
    let j = P.e0 + (P.row0 + b) * P.n_nodes + src[P.eoff + e];
    var x = energies[j] * P.alpha;
    if (P.has_active != 0u && act_mask[j] == 0u) {
        x = 0.0;
    }
    flow[P.out0 + b * P.n_edges + e] = x * pi[P.eoff + e];
}
