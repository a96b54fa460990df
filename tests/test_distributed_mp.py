"""Data-parallel training with real processes over loopback (gloo, MASTER_ADDR=127.0.0.1, a
free port): 2 ranks give the parameters of 1 process on the same global batch (NumPy float64
within 1e-12, float32 and wgpu within the parity tolerance) and reruns are bit-identical.
(The command-line tests in test_distributed_cli.py kill a rank, interrupt and resume.)"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import energetic_wgpu as ew
from energetic_wgpu import distributed as ewd

import dist_worker as w
from conftest import ADAPTERS, assert_parity

pytestmark = [
    pytest.mark.skipif(not ewd.torch_available(), reason="no torch: pip install 'energetic_wgpu[distributed]'"),
    pytest.mark.slow,
]

WORKER = str(Path(__file__).with_name("dist_worker.py"))
REPO = Path(__file__).resolve().parents[1]


def launch(args, tmp_path, nproc=2, timeout=150):
    """Run tests/dist_worker.py as ``nproc`` ranks; returns [(returncode, stderr)] by rank and the seconds taken."""
    port = ewd.free_port()
    procs = []
    t0 = time.monotonic()
    for rank in range(nproc):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(nproc), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "tests"))
        procs.append(subprocess.Popen([sys.executable, WORKER, "--out", str(tmp_path), *args], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise AssertionError(f"a rank did not finish within {timeout} s (a hang)")
        results.append((p.returncode, err))
    return results, time.monotonic() - t0


def reference(backend, loss, masked, steps=5):
    """The same training in this process, on one rank, with the whole global batch."""
    graph, params = w.problem()
    router = ew.Router(graph, params, backend)
    opt = w.make_optimizer(router)
    losses = []
    for step in range(1, steps + 1):
        x, t, mask = w.batch(step, graph.num_nodes, loss, masked)
        losses.append(router.train_step(x, t, opt, mask=mask, **w.step_kwargs(loss)).loss)
    return router.params(), np.array(losses)


def _load(tmp_path, name, rank):
    return np.load(tmp_path / f"{name}-rank{rank}.npz")


def _check_ok(results):
    for rank, (code, err) in enumerate(results):
        assert code == 0, f"rank {rank} exited {code}:\n{err[-3000:]}"


SCENARIOS = "numpy64:mse:mask,numpy64:cross_entropy,numpy32:mse,torch64:mse:mask"


@pytest.fixture(scope="module")
def numpy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dp")
    results, _ = launch(["--scenarios", SCENARIOS], out)
    _check_ok(results)
    return out


@pytest.mark.parametrize("name,dtype,loss,masked", [
    ("numpy64-mse-mask", "float64", "mse", True),
    ("numpy64-cross_entropy", "float64", "cross_entropy", False),
    ("numpy32-mse", "float32", "mse", False),
])
def test_two_ranks_equal_one_process(numpy_run, name, dtype, loss, masked):
    ref, ref_losses = reference(ew.get_backend("numpy", dtype=dtype), loss, masked)
    ranks = [_load(numpy_run, name, r) for r in range(2)]
    for key in ("q", "k", "bias"):
        # the replicas are identical, bit for bit
        np.testing.assert_array_equal(ranks[0][key], ranks[1][key])
        got, want = ranks[0][key], getattr(ref, key)
        assert got.dtype == want.dtype == np.dtype(dtype)
        if dtype == "float64":
            err = float(np.max(np.abs(got - want)))
            assert err <= 1e-12, f"{name} {key}: max|2 ranks - 1 rank| = {err:.3e} > 1e-12"
        else:
            assert_parity(got, want, f"{name} {key}")
    assert str(ranks[0]["checksum"]) == str(ranks[1]["checksum"])
    # the reported loss is the full-batch loss, not a shard's
    tol = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(ranks[0]["losses"], ref_losses, rtol=tol, atol=tol)
    np.testing.assert_array_equal(ranks[0]["losses"], ranks[1]["losses"])
    # and the parameters moved: the test would notice a no-op update
    assert float(np.max(np.abs(ranks[0]["bias"] - w.problem()[1].bias))) > 1e-3


def test_torch_module_with_all_reduce_gradients_equals_one_process(numpy_run):
    """A user's own torch loop over energetic_wgpu.torch.EnergeticRouter, data-parallel through
    all_reduce_gradients(module, weight=mask count): the one-process parameters within 1e-12."""
    module = w.torch_module()
    ref_losses = w.torch_train(module, 5)
    ranks = [_load(numpy_run, "torch64-mse-mask", r) for r in range(2)]
    for key in ("q", "k", "bias"):
        np.testing.assert_array_equal(ranks[0][key], ranks[1][key])
        want = getattr(module, key).detach().numpy()
        err = float(np.max(np.abs(ranks[0][key] - want)))
        assert err <= 1e-12, f"torch {key}: max|2 ranks - 1 process| = {err:.3e}"
    np.testing.assert_allclose(ranks[0]["losses"], ref_losses, rtol=1e-12, atol=1e-12)
    assert float(np.max(np.abs(ranks[0]["bias"] - w.problem()[1].bias))) > 1e-3


def test_rerun_with_the_same_world_size_is_bit_identical(numpy_run, tmp_path):
    results, _ = launch(["--scenarios", "numpy32:mse"], tmp_path)
    _check_ok(results)
    for rank in range(2):
        a, b = _load(numpy_run, "numpy32-mse", rank), _load(tmp_path, "numpy32-mse", rank)
        for key in ("q", "k", "bias", "losses"):
            assert a[key].tobytes() == b[key].tobytes(), f"rank {rank} {key} differs between two runs"


@pytest.mark.skipif(len(ADAPTERS) < 1, reason="no wgpu adapter")
def test_two_wgpu_ranks_equal_one_process(tmp_path):
    """Rank 0 on adapter 0 (lavapipe, Vulkan), rank 1 on the last adapter (llvmpipe, OpenGL,
    where there is one): the same parameters as one process on adapter 0."""
    adapters = f"{ADAPTERS[0]['index']};{ADAPTERS[-1]['index']}"
    results, _ = launch(["--scenarios", f"wgpu:{adapters}:mse:mask", "--steps", "5"], tmp_path)
    _check_ok(results)
    name = f"wgpu-{adapters.replace(';', '_')}-mse-mask"
    ranks = [_load(tmp_path, name, r) for r in range(2)]
    ref, ref_losses = reference(ew.get_backend("wgpu", adapter=ADAPTERS[0]["index"]), "mse", True, steps=5)
    for key in ("q", "k", "bias"):
        np.testing.assert_array_equal(ranks[0][key], ranks[1][key])
        assert_parity(ranks[0][key], getattr(ref, key), f"wgpu {key}")
    np.testing.assert_allclose(ranks[0]["losses"], ref_losses, rtol=1e-5, atol=1e-6)
    for rank in range(2):
        # steps 3..5: the pool holds two steps' arrays (the previous result lives while the next step runs)
        counts = dict(zip(w.COUNTED, ranks[rank]["counts"][2:].T))
        assert list(counts["readbacks"]) == [1, 1, 1], f"rank {rank}: one packed readback per step"
        # two submits: forward..backward ending in the packed readback, and the AdamW update
        # (flushed when the next step uploads its batch); never more
        assert list(counts["submits"]) == [2, 2, 2], f"rank {rank}: submits per step"
        assert list(counts["buffers_created"]) == [0, 0, 0], f"rank {rank}: no new buffer in steady state"
