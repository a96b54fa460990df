"""The train step's mse loss finished by the optimizer's prepare kernel (``mse(..., final=False)``),
and the masked mse gradient that counts the mask itself (``mse_grad_counted``).

The loss a train step reports is the same bits as ``loss_and_grads`` (loss_final), with and
without a mask; an optimizer that does not take the loss over leaves it to ``finish_loss``.
"""

from __future__ import annotations

import numpy as np
import pytest

from energetic_wgpu import AdamW, GraphConfig, Router, RouterParams, build_lattice
from energetic_wgpu.backends.numpy_backend import NumpyBackend
from energetic_wgpu.backends.webgpu import ops_train

GRAPH = build_lattice(GraphConfig(layers=3, nodes_per_layer=16, local_neighbors=4, jump_neighbors=2, seed=6))


def _data(batch=4, seed=0):
    rng = np.random.default_rng(seed)
    n = GRAPH.num_nodes
    return (rng.random((batch, n)).astype(np.float32), (0.1 * rng.random((batch, n))).astype(np.float32),
            rng.random((batch, n)) < 0.6)


def _router(be):
    return Router(GRAPH, RouterParams.init(GRAPH, 6, tau=0.8, top_k=3, seed=2), be)


def _bits(be, x) -> bytes:
    return be.to_numpy(x).tobytes()


@pytest.mark.parametrize("masked", [False, True])
def test_train_step_loss_is_loss_and_grads_loss(gpu_backend, masked):
    """train_step (loss finished in adamw_prepare) == loss_and_grads + optimizer.step
    (loss_final): the same loss, norm and parameters, bit for bit, over 3 steps."""
    be = gpu_backend
    e, t, m = _data()
    mask = be.asarray(m) if masked else None
    ra, rb = _router(be), _router(be)
    oa, ob = AdamW(ra, lr=0.02, max_grad_norm=0.3), AdamW(rb, lr=0.02, max_grad_norm=0.3)
    for _ in range(3):
        lg = ra.loss_and_grads(be.asarray(e), be.asarray(t), mask=mask)
        na = oa.step(lg.grads, loss=lg.loss_array)
        res = rb.train_step(be.asarray(e), be.asarray(t), ob, mask=mask)
        assert _bits(be, res.loss_array) == _bits(be, lg.loss_array)
        assert _bits(be, res.grad_norm_array) == _bits(be, na)
    for a, b in zip(ra.parameters(), rb.parameters()):
        assert _bits(be, a) == _bits(be, b)
    ref = _router(NumpyBackend())
    ref_loss = ref.loss_and_grads(e, t, mask=m if masked else None).loss
    # the wgpu routers have moved on: compare a fresh one's first loss with NumPy's
    fresh = _router(be)
    loss = fresh.train_step(be.asarray(e), be.asarray(t), AdamW(fresh), mask=mask).loss
    assert abs(loss - ref_loss) <= 1e-5 * max(1.0, abs(ref_loss))


class _NoOpOptimizer:
    """An optimizer that ignores its loss argument (finish_loss must complete the loss)."""

    def __init__(self, router):
        self.router = router

    def step(self, grads, loss=None):
        return self.router.backend.sum_squares(grads.as_list())


def test_an_optimizer_that_ignores_the_loss(gpu_backend):
    be = gpu_backend
    e, t, _ = _data(seed=1)
    r = _router(be)
    expect = r.loss_and_grads(be.asarray(e), be.asarray(t)).loss_array
    res = r.train_step(be.asarray(e), be.asarray(t), _NoOpOptimizer(r))
    assert _bits(be, res.loss_array) == _bits(be, expect)


def test_entropy_term_and_cross_entropy_still_final(gpu_backend):
    """Losses the optimizer does not finish (entropy term added on the host side of the step,
    cross-entropy) are what loss_and_grads reports."""
    be = gpu_backend
    e, t, _ = _data(seed=2)
    for kw in (dict(entropy_lambda=0.05), dict(loss="cross_entropy")):
        ra, rb = _router(be), _router(be)
        expect = ra.loss_and_grads(be.asarray(e), be.asarray(t), **kw).loss_array
        res = rb.train_step(be.asarray(e), be.asarray(t), AdamW(rb), **kw)
        assert _bits(be, res.loss_array) == _bits(be, expect), kw


def test_non_finite_loss_skips_the_step(gpu_backend):
    be = gpu_backend
    e, t, _ = _data(seed=3)
    t[0, 0] = np.inf
    r = _router(be)
    before = [be.to_numpy(p).copy() for p in r.parameters()]
    res = r.train_step(be.asarray(e), be.asarray(t), AdamW(r))
    assert res.skipped and not np.isfinite(res.loss)
    for a, p in zip(before, r.parameters()):
        assert np.array_equal(a, be.to_numpy(p))


def test_masked_mse_without_the_counted_gradient(gpu_backend, monkeypatch):
    """Above COUNTED_PARTS_MAX partials the masked gradient waits for loss_final (one dispatch
    more): the same bits as the counted kernel, in and out of a train step."""
    be = gpu_backend
    e, t, m = _data(seed=4)
    pred, tgt, mask = be.asarray(e), be.asarray(t), be.asarray(m)
    counted = [_bits(be, x) for x in be.mse(pred, tgt, mask)]
    d0 = be.counters()["dispatches"]
    r = _router(be)
    opt = AdamW(r)
    res = r.train_step(pred, tgt, opt, mask=mask)
    d1 = be.counters()["dispatches"]
    monkeypatch.setattr(ops_train, "COUNTED_PARTS_MAX", 0)
    assert [_bits(be, x) for x in be.mse(pred, tgt, mask)] == counted
    r2 = _router(be)
    d2 = be.counters()["dispatches"]
    res2 = r2.train_step(pred, tgt, AdamW(r2), mask=mask)
    assert be.counters()["dispatches"] - d2 == d1 - d0 + 1  # loss_final, mse_grad for mse_grad_counted
    assert _bits(be, res2.loss_array) == _bits(be, res.loss_array)
    ref = _router(NumpyBackend()).loss_and_grads(e, t, mask=m).loss
    assert abs(res2.loss - ref) <= 1e-5 * max(1.0, abs(ref))
