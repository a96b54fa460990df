// edge_flow.wgsl: flow[b, e] = x[b, src[e]] * pi[e] with x = act_mask ? energies * alpha : 0.

struct FlowParams {
    batch: u32,
    n_nodes: u32,
    n_edges: u32,
    has_active: u32,
    alpha: f32,
    _pad0: u32,
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
fn edge_flow(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = thread_index(gid, nwg);
    if (i >= P.batch * P.n_edges) {
        return;
    }
    let b = i / P.n_edges;
    let e = i - b * P.n_edges;
    let j = b * P.n_nodes + src[e];
    var x = energies[j] * P.alpha;
    if (P.has_active != 0u && act_mask[j] == 0u) {
        x = 0.0;
    }
    flow[i] = x * pi[e];
}
