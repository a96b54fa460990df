"""Batch chunks: the router's [B, N] state past one storage binding (batch_chunks.py).

With a forced small binding limit (``backend.binding_limit``) a batch of B = 150 rows over
N = 300 nodes splits into 3 chunks of 52, 52 and 46 rows (B is a multiple of neither 4 nor
52; a chunk starts at byte 62,400 * i, not a multiple of 256, so ranges are bound from the
aligned-down offset). The graph has a hub of in-degree 300 and one of out-degree 300, so the
workgroup-per-node kernels run per chunk too. Forward (every kept state, edge flow, metrics),
backward (every gradient), the losses and several AdamW steps are bit-identical to the
unsplit run on the default limits, and within 1e-5 * max(1, max|ref|) of NumPy. The same
holds with the packed parameters and the reverse index split too (a 16 KiB limit), and
grad_pi's hand-over between chunks is checked on its own.
"""

from __future__ import annotations


import numpy as np
import pytest
from parity import assert_parity, forced_limits

from energetic_wgpu import AdamW, Graph, Router, RouterParams
from energetic_wgpu.backends.webgpu import batch_chunks
from energetic_wgpu.errors import DeviceLimitError

N, E, B, D = 300, 1500, 150, 4
LIMIT = 65536  # bytes per binding: node-major state of 52 rows = 62,400 bytes
CHUNKS = [(0, 52), (52, 52), (104, 46)]


def _graph(e: int = E) -> Graph:
    rng = np.random.default_rng(3)
    rest = e - 600
    src = np.concatenate([np.full(300, 7), rng.integers(0, N, 300), rng.integers(0, N, rest)])
    dst = np.concatenate([rng.integers(0, N, 300), np.full(300, 11), rng.integers(0, N, rest)])
    order = np.argsort(src, kind="stable")
    return Graph.from_edges(src[order], dst[order], num_nodes=N)


GRAPH = _graph()
PARAMS = RouterParams.init(GRAPH, D, tau=0.8, alpha=0.9, top_k=0, seed=1, noise=0.1)


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    en = (rng.random((B, N)) * (rng.random((B, N)) < 0.3)).astype(np.float32)
    act = rng.random((B, N)) < 0.8
    tgt = (rng.random((B, N)) * 0.1).astype(np.float32)
    return en, act, tgt


BUFFER = 131072  # bytes per buffer in the "buffer" mode: [B, N] arrays (180,000 bytes) split over buffers
#: the forced limits of each split mode: "binding" splits the batch into chunks; "buffer" also
#: puts every [B, N] and [B, E] array in several buffers of 104 rows at most (two chunks), the
#: first ending at element 31,200 inside a reduction workgroup of 4096 (losses, metrics)
MODES = ["binding", "buffer"]


def _limit(be, split):
    return forced_limits(be, LIMIT if split else None, BUFFER if split == "buffer" else None)


def test_plan(gpu_backend):
    be = gpu_backend
    assert batch_chunks.plan(be, B, N) is None  # default limits: one chunk, today's dispatches
    with be.binding_limit(LIMIT):
        assert batch_chunks.plan(be, B, N) == CHUNKS
        assert batch_chunks.plan(be, 52, N) is None  # 62,400 bytes of state fit
        assert batch_chunks.plan(be, 53, N) == [(0, 52), (52, 1)]
    with pytest.raises(DeviceLimitError, match=r"array of 4294967296 elements \(17179869184 bytes\) is past 2\^32 "
                                               r"elements"):
        batch_chunks.plan(be, 2**22, 2**10)  # only reachable where maxBufferSize >= 16 GiB
    with be.binding_limit(4096):  # not even 4 node-major rows: the state in rows (test_row_state.py)
        assert batch_chunks.plan(be, 7, N) == [(0, 3), (3, 3), (6, 1)]
    with be.binding_limit(1024):
        with pytest.raises(DeviceLimitError, match=r"one batch row of N = 300 nodes \(1200 bytes, plus "
                                                   r"256 bytes of alignment\) does not fit the binding limit of 1024"):
            batch_chunks.plan(be, B, N)


def _forward(be, split: bool, steps: int, masked: bool):
    en, act, _ = _data()
    r = Router(GRAPH, PARAMS, be)
    with _limit(be, split):
        before = be.counters()["dispatches"]
        out = r.forward(en, active=act if masked else None, steps=steps, retain_sinks=True)
        states = [be.to_numpy(out.energies_at(t)) for t in range(steps + 1)]
        dispatches = be.counters()["dispatches"] - before
        flow = be.to_numpy(out.edge_flow)
        metrics = be.to_numpy(out.metrics_array)
    return states, flow, metrics, dispatches


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("steps,masked", [(1, False), (3, True)])
def test_forward_split_bit_identical(gpu_backend, np_backend, steps, masked, mode):
    whole = _forward(gpu_backend, False, steps, masked)
    split = _forward(gpu_backend, mode, steps, masked)
    # per chunk: a transpose and a scatter per step (+ the hub kernel), the rows of earlier states
    assert split[3] > whole[3] + 2 * steps
    for t, (a, b) in enumerate(zip(split[0], whole[0])):
        assert a.shape == (B, N)
        assert a.tobytes() == b.tobytes(), f"state {t}"
    assert split[1].tobytes() == whole[1].tobytes()
    assert split[2].tobytes() == whole[2].tobytes()
    en, act, _ = _data()
    ref = Router(GRAPH, PARAMS, np_backend).forward(en, active=act if masked else None, steps=steps,
                                                    retain_sinks=True)
    for t in range(steps + 1):
        assert_parity(split[0][t], ref.energies_at(t), f"state {t}")
    assert_parity(split[1], ref.edge_flow, "edge_flow")
    assert_parity(split[2], np.asarray(ref.metrics_array), "metrics")


def _backward(be, split: bool, steps: int):
    en, act, tgt = _data(1)
    r = Router(GRAPH, PARAMS, be)
    with _limit(be, split):
        out = r.forward(en, active=act, steps=steps, retain_sinks=True)
        g = r.backward(out, tgt, energies_grad=True)
        grads = [be.to_numpy(x) for x in (g.q, g.k, g.bias, g.energies)]
        lg = r.loss_and_grads(en, tgt, loss="cross_entropy", active=act, steps=steps)
        grads += [be.to_numpy(x) for x in lg.grads.as_list()] + [be.to_numpy(lg.loss_array)]
    return grads


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("steps", [1, 3])
def test_backward_split_bit_identical(gpu_backend, np_backend, steps, mode):
    split = _backward(gpu_backend, mode, steps)
    whole = _backward(gpu_backend, False, steps)
    names = ["q", "k", "bias", "energies", "ce q", "ce k", "ce bias", "ce loss"]
    for name, a, b in zip(names, split, whole):
        assert a.tobytes() == b.tobytes(), name
    ref = _backward(np_backend, False, steps)
    for name, a, b in zip(names, split, ref):
        assert_parity(a, b, name)


def _train(be, split: bool, n_steps: int = 3):
    en, act, tgt = _data(2)
    mask = np.random.default_rng(5).random((B, N)) < 0.5
    r = Router(GRAPH, PARAMS, be)
    opt = AdamW(r, lr=0.01, betas=(0.85, 0.97), eps=1e-4, weight_decay=0.02)
    losses, submits = [], []
    with _limit(be, split):
        ge, ga, gt, gm = (be.asarray(x) for x in (en, act, tgt, mask))
        for _ in range(n_steps):
            before = be.counters()["submits"]
            res = r.train_step(ge, gt, opt, mask=gm, active=ga, steps=3, retain_sinks=True)
            submits.append(be.counters()["submits"] - before)
            losses.append(be.to_numpy(res.loss_array))
        p = r.params()
    return [p.q, p.k, p.bias], np.concatenate(losses), submits


@pytest.mark.parametrize("mode", MODES)
def test_train_steps_split_bit_identical(gpu_backend, np_backend, mode):
    params, losses, submits = _train(gpu_backend, mode)
    assert submits == [1, 1, 1]  # every chunk of a step in the step's one submit
    whole_params, whole_losses, _ = _train(gpu_backend, False)
    assert losses.tobytes() == whole_losses.tobytes()
    for a, b in zip(params, whole_params):
        assert a.tobytes() == b.tobytes()
    ref_params, ref_losses, _ = _train(np_backend, False)
    assert_parity(losses, ref_losses, "loss")
    for name, a, b in zip(("q", "k", "bias"), params, ref_params):
        assert_parity(a, b, name)


def test_arrays_past_the_buffer_size_split_over_buffers(gpu_backend):
    """In the "buffer" mode [B, N] arrays live in parts of 104 rows (two batch chunks of 52),
    each from a pad that keeps every element at its offset modulo 256; they are written,
    read back and bound in row ranges; what is still refused says why."""
    from energetic_wgpu.backends.webgpu.arrays import binding_of, parts_of

    be = gpu_backend
    en, act, _ = _data()
    with _limit(be, "buffer"):
        x, m = be.asarray(en), be.asarray(act)
        parts = parts_of(x)
        assert [(s, c, pad) for s, c, _, pad in parts] == [(0, 104 * N, 0), (104 * N, 46 * N, 124800 % 256)]
        assert [(s, c) for s, c, *_ in parts_of(m)] == [(0, 104 * N), (104 * N, 46 * N)]
        assert x.is_split and "2 buffers" in repr(x)
        assert be.to_numpy(x).tobytes() == en.tobytes()
        assert be.read_async(x).result().tobytes() == en.tobytes()
        np.testing.assert_array_equal(be.to_numpy(m), act)
        junk = be.asarray(np.full((B, N), 7.0, np.float32))
        del junk  # its buffers go back to the pool: zeros below takes them
        be.synchronize()
        z = be.zeros((B, N))  # as asarray: split past the buffer limit, every part cleared
        assert z.is_split and not be.to_numpy(z).any()
        z1 = be.zeros((B, N), np.bool_)
        assert z1.is_split and be.to_numpy(z1).dtype == np.bool_ and not be.to_numpy(z1).any()
        view, e0 = batch_chunks.rows_view(be, x, 104, 46, N)
        assert e0 == 124800 % 256 // 4 and view.shape == (e0 + 46 * N,)
        before = be.counters()
        with pytest.raises(DeviceLimitError, match=r"an array of 180000 bytes split over 2 buffers \(past the buffer "
                                                   r"size limit in use\) cannot be bound whole by this op"):
            binding_of(x)  # what an op that binds its inputs whole meets
        with pytest.raises(DeviceLimitError, match=r"elements 15600 .. 46800 of a split array cross the boundary of "
                                                   r"its buffers at 31200"):
            batch_chunks.rows_view(be, x, 52, 104, N)
        assert be.counters()["dispatches"] == before["dispatches"]
        doubled = be.add(x, x)  # over ranges in one part of each array (its output split too)
        assert doubled.is_split
        np.testing.assert_array_equal(be.to_numpy(doubled), 2 * be.to_numpy(x))
        with pytest.raises(DeviceLimitError, match=r"has 4294967296 elements, past 2\^32"):
            batch_chunks.new_rows(be, (2**22, 2**10), np.float32, "energies")
    # the backend stays usable
    assert be.to_numpy(be.add(be.asarray(en[:2]), be.asarray(en[:2]))).tobytes() == (en[:2] * 2).tobytes()


def _public_ops(be, split: bool):
    en, act, tgt = _data(3)
    pi = Router(GRAPH, PARAMS, be).forward(en[:1]).edge_pi
    acc = np.linspace(-1, 1, E, dtype=np.float32)
    with _limit(be, split):
        nxt = be.energy_scatter(GRAPH, en, pi, 0.9, act, retain_sinks=True)
        ge, gpi = be.energy_scatter_backward(GRAPH, en, pi, tgt, 0.9, act, retain_sinks=True, grad_pi_acc=acc)
        loss, grad = be.mse(nxt, tgt, act)
        return [be.to_numpy(x) for x in (nxt, ge, gpi, loss, grad)]


@pytest.mark.parametrize("mode", MODES)
def test_public_ops_split_bit_identical(gpu_backend, np_backend, mode):
    """energy_scatter, energy_scatter_backward and a masked mse on [B, N] arrays over one binding."""
    split = _public_ops(gpu_backend, mode)
    whole = _public_ops(gpu_backend, False)
    ref = _public_ops(np_backend, False)
    for name, a, b, c in zip(("next", "grad_energies", "grad_pi", "loss", "mse grad"), split, whole, ref):
        assert a.tobytes() == b.tobytes(), name
        assert_parity(a, c, name)


def _all_splits(be, split: bool):
    """d = 8, E = 2,500 under a 16 KiB limit: the packed parameters (29,200 bytes) and the
    reverse index pairs (20,000 bytes) split too, and the batch runs in 13 chunks of 12 rows."""
    g = _graph(2500)
    params = RouterParams.init(g, 8, tau=0.8, alpha=0.9, top_k=0, seed=2, noise=0.1)
    en, act, tgt = _data(4)
    with forced_limits(be, 16384 if split else None):
        if split:
            assert len(batch_chunks.plan(be, B, N)) == 13
        r = Router(g, params, be)
        opt = AdamW(r, lr=0.01, eps=1e-4)
        out = r.forward(en, active=act, steps=2, retain_sinks=True)
        gr = r.backward(out, tgt, energies_grad=True)
        got = [be.to_numpy(x) for x in (out.next_energies, gr.q, gr.k, gr.bias, gr.energies)]
        for _ in range(2):
            got.append(be.to_numpy(r.train_step(en, tgt, opt, active=act, steps=2).loss_array))
        got += [r.params().q, r.params().bias]
    return got


def test_batch_parameter_and_reverse_index_splits_together(gpu_backend, np_backend):
    split = _all_splits(gpu_backend, True)
    whole = _all_splits(gpu_backend, False)
    ref = _all_splits(np_backend, False)
    names = ["next", "grad q", "grad k", "grad bias", "grad energies", "loss 1", "loss 2", "q", "bias"]
    for name, a, b, c in zip(names, split, whole, ref):
        assert a.tobytes() == b.tobytes(), name
        assert_parity(a, c, name)


@pytest.mark.parametrize("node_major", [False, True])
def test_grad_pi_carry_protocol(gpu_backend, node_major):
    """scatter_bwd_pi(_nm)'s hand-over between batch chunks, on chunks of 0 rows (nothing is
    added): a middle chunk (flags 64 | 128) passes (sum, compensation) on unchanged, the last
    (64) returns sum - compensation + acc_in. (On lavapipe the compiler drops Kahan's
    compensation inside a sum, so the bit-identity tests above never see a non-zero one.)"""
    from energetic_wgpu.backends.webgpu import ops_backward

    be = gpu_backend
    gd = be.graph_data(GRAPH)
    sums = np.linspace(1.0, 2.0, E, dtype=np.float32)
    comps = np.linspace(-2.0**-20, 2.0**-20, E, dtype=np.float32)
    acc = np.full(E, 0.5, np.float32)
    gp, comp = be.asarray(sums), be.asarray(comps)
    pi, rows = be.asarray(np.full(E, 0.3, np.float32)), be.zeros((4 * N,))
    for flags in (64 | 128, 64):
        call = batch_chunks.ChunkCall(rows=0, e0=0, out=None, grad_pi=gp, comp=comp, carry=flags)
        ops_backward._scatter_backward(be, gd, rows, None, node_major, pi, rows, 1.0, False, False, be.asarray(acc),
                                       (0, N), chunk=call)
        if flags & 128:
            assert be.to_numpy(gp).tobytes() == sums.tobytes()
            assert be.to_numpy(comp).tobytes() == comps.tobytes()
    np.testing.assert_array_equal(be.to_numpy(gp), acc + (sums - comps))


def test_flat_pieces_cut_at_buffers_and_copy_the_straddling_workgroup(gpu_backend):
    """A reduction over B * N = 45,000 elements under the "buffer" mode: ranges of 4 workgroups
    of 4096 (one binding), cut where the split arrays change buffers (element 31,200); the
    workgroup 7 across that cut runs on copies, and a masked mse through it is bit-identical
    to the unsplit one (its gradient copied back into both buffers)."""
    be = gpu_backend
    en, act, tgt = _data(6)
    whole = [be.to_numpy(x) for x in be.mse(en, tgt, act)]
    with _limit(be, "buffer"):
        x, t = be.asarray(en), be.asarray(tgt)
        pieces = [(w0, m, v[0] is x or v[0].is_view) for w0, m, v in
                  batch_chunks.flat_pieces(be, B * N, 4096, [x, t], n_out=1)]
        assert pieces == [(0, 16384, True), (4, 12288, True), (7, 4096, False), (8, 12232, True)]
        split = [be.to_numpy(y) for y in be.mse(x, t, be.asarray(act))]
    assert split[0].tobytes() == whole[0].tobytes()
    assert split[1].tobytes() == whole[1].tobytes()
