// elementwise.wgsl: add: out[off + i] = a[off + i] + b[off + i] for i < n; gather: out[i] = a[index[i]] for i < n
// (the split reverse index, reverse_index.py, puts per-edge values in reverse-index order).
// gather_window: the same over edge windows (edge_windows.py): entry t < n of a window of the
// reverse index is element off + t of the bound index / out ranges; it takes a[e - base] when
// its edge e = index[off + t] lies in the bound source window lo .. lo + count, and is left
// alone otherwise (one dispatch per source window fills every entry once). gather_rows: the
// same for rows of d floats (below).

struct AddParams {
    n: u32,
    lo: u32,
    count: u32,
    base: u32,
    off: u32,
    dim: u32,    // gather_rows: floats per row
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> P: AddParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> index: array<u32>;

@compute @workgroup_size(WG)
fn add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = thread_index(gid, nwg);
    if (i >= P.n) {
        return;
    }
    let j = P.off + i;  // off: where a range of arrays past one binding starts in its bound views
    out[j] = a[j] + b[j];
}

@compute @workgroup_size(WG)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = thread_index(gid, nwg);
    if (i >= P.n) {
        return;
    }
    out[i] = a[index[i]];
}

@compute @workgroup_size(WG)
fn gather_window(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = thread_index(gid, nwg);
    if (t >= P.n) {
        return;
    }
    let e = index[P.off + t];
    if (e - P.lo < P.count) {
        out[P.off + t] = a[e - P.base];
    }
}

// gather_rows: the rows of a node range (node_rows.py): thread i < n takes 4 floats c0 .. c0 + 3
// (c0 = 4 (i mod ceil(dim / 4)), those below dim) of entry t = i / ceil(dim / 4) of a window,
// element off + t of the bound index range: when its node e = index[off + t] lies in the bound
// block of rows lo .. lo + count, they are copied from row e (a[e * dim - base + c], base mod
// 2^32: the block bound from an aligned offset) to row off + t of out (neighbouring threads
// copy neighbouring floats of a row). One dispatch per block of rows fills every entry once
// (exact copies).
@compute @workgroup_size(WG)
fn gather_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = thread_index(gid, nwg);
    if (i >= P.n) {
        return;
    }
    let quads = (P.dim + 3u) / 4u;
    let t = i / quads;
    let c0 = (i - t * quads) * 4u;
    let e = index[P.off + t];
    if (e - P.lo < P.count) {
        let s = e * P.dim - P.base;
        let o = (P.off + t) * P.dim;
        for (var c = c0; c < min(c0 + 4u, P.dim); c = c + 1u) {
            out[o + c] = a[s + c];
        }
    }
}
