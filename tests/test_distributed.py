"""energetic_wgpu.distributed without other processes: packed readback/upload, the split
train step, sharding, shard weights, and the error without torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import energetic_wgpu as ew
from energetic_wgpu import distributed as ewd
from energetic_wgpu.errors import BackendUnavailable, InvalidArgumentError
from energetic_wgpu.tasks import Batch, TeacherTask

from parity import assert_parity


def _router(backend, seed=0):
    graph = ew.build_lattice(ew.GraphConfig(layers=3, nodes_per_layer=12, local_neighbors=3, jump_neighbors=1))
    return ew.Router(graph, ew.RouterParams.init(graph, dim=4, top_k=2, seed=seed, noise=0.3), backend)


def test_read_packed_is_one_readback_and_write_packed_round_trips(backend):
    r = _router(backend)
    arrays = r.parameters()
    ref = np.concatenate([np.ravel(backend.to_numpy(a)) for a in arrays])
    before = backend.counters().get("readbacks", 0)
    flat = backend.read_packed(arrays)
    assert backend.counters().get("readbacks", 0) - before == (0 if backend.name == "numpy" else 1)
    assert flat.dtype == backend.dtype and flat.shape == (ref.size,)
    np.testing.assert_array_equal(flat, ref)
    new = np.arange(ref.size, dtype=backend.dtype) / 7
    backend.write_packed(new, arrays)
    np.testing.assert_array_equal(backend.read_packed(arrays), new)
    sizes = np.cumsum([0] + [int(np.prod(a.shape)) for a in arrays])
    for i, a in enumerate(arrays):  # each array got its own segment, in order, with its shape
        np.testing.assert_array_equal(backend.to_numpy(a), new[sizes[i] : sizes[i + 1]].reshape(a.shape))
    assert backend.read_packed([]).shape == (0,)


def test_loss_and_grads_then_step_is_train_step(backend):
    """The split used by data-parallel training gives the same bits as train_step."""
    rng = np.random.default_rng(3)
    a, b = _router(backend), _router(backend)
    n = a.graph.num_nodes
    oa, ob = ew.AdamW(a, lr=0.05, max_grad_norm=0.5), ew.AdamW(b, lr=0.05, max_grad_norm=0.5)
    for _ in range(3):
        x, t = rng.random((5, n)), rng.random((5, n))
        res = a.train_step(x, t, oa, entropy_lambda=0.01, steps=2)
        lg = b.loss_and_grads(x, t, entropy_lambda=0.01, steps=2)
        norm = ob.step(lg.grads)
        assert lg.loss == res.loss
        assert float(backend.to_numpy(norm)[0]) == res.grad_norm
    for pa, pb in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(backend.to_numpy(pa), backend.to_numpy(pb))


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_an_empty_shard_has_zero_loss_gradient_and_weight(backend, loss):
    """A rank whose shard is empty (global batch < world size) contributes nothing."""
    r = _router(backend)
    empty = np.zeros((0, r.graph.num_nodes))
    lg = r.loss_and_grads(empty, empty, loss=loss)
    assert lg.loss == 0.0 and ewd.shard_weight(loss, tuple(lg.output.next_energies.shape)) == 0.0
    for g in lg.grads.as_list():
        np.testing.assert_array_equal(backend.to_numpy(g), 0.0)


@pytest.mark.parametrize("world", [1, 2, 3, 5, 8])
def test_shard_bounds_cover_the_batch_and_differ_by_at_most_one(world):
    for b in (0, 1, 2, 7, 64, 65):
        bounds = [ewd.shard_bounds(b, r, world) for r in range(world)]
        assert bounds[0][0] == 0 and bounds[-1][1] == b
        assert all(bounds[i][1] == bounds[i + 1][0] for i in range(world - 1))
        sizes = [hi - lo for lo, hi in bounds]
        assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    assert ewd.shard_bounds(7, 1, 2) == (4, 7)


def test_shard_bounds_errors_name_the_argument():
    with pytest.raises(InvalidArgumentError, match="rank must be in \\[0, world_size - 1 = 1\\], got 2"):
        ewd.shard_bounds(4, 2, 2)
    with pytest.raises(InvalidArgumentError, match="world_size must be an int >= 1, got 0"):
        ewd.shard_bounds(4, 0, 0)
    with pytest.raises(InvalidArgumentError, match="batch_size must be an int >= 0"):
        ewd.shard_bounds(-1, 0, 1)


def test_shard_weight_counts_elements_mask_and_rows():
    assert ewd.shard_weight("mse", (3, 5)) == 15.0
    mask = np.zeros((3, 5), bool)
    mask[0, :2] = mask[2, 4] = True
    assert ewd.shard_weight("mse", (3, 5), mask) == 3.0
    assert ewd.shard_weight("cross_entropy", (3, 5)) == 3.0
    assert ewd.shard_weight("cross_entropy", (5,)) == 1.0
    assert ewd.shard_weight("mse", (0, 5)) == 0.0
    with pytest.raises(InvalidArgumentError, match="loss must be"):
        ewd.shard_weight("l1", (3, 5))


def test_sharded_teacher_rows_are_the_full_batch_rows(np_backend):
    r = _router(np_backend)
    task = TeacherTask(r.graph, np_backend, dim=4, top_k=2, batch_size=5, seed=2)
    full = task.batch(3)
    parts = [ewd.ShardedData(task, rank, 2, 5).batch(3) for rank in range(2)]
    assert [p.energies.shape[0] for p in parts] == [3, 2]
    np.testing.assert_array_equal(np.concatenate([p.energies for p in parts]), full.energies)
    assert_parity(np.concatenate([p.target for p in parts]), full.target, "target", rtol=1e-6)


def test_sharded_array_source_slices_batch_and_mask():
    class Source:
        def batch(self, step):
            e = np.arange(20.0).reshape(5, 4) + step
            return Batch(e, -e, e > 10)

        def state(self):
            return {"kind": "x"}

        def load_state(self, state):
            self.loaded = state

    src = Source()
    s = ewd.ShardedData(src, 1, 2, 5)
    b = s.batch(1)
    np.testing.assert_array_equal(b.energies, np.arange(20.0).reshape(5, 4)[3:] + 1)
    np.testing.assert_array_equal(b.mask, b.energies > 10)
    assert s.state() == {"kind": "x"}
    s.load_state({"a": 1})
    assert src.loaded == {"a": 1}


def test_without_torch_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(BackendUnavailable, match=r"energetic_wgpu\[distributed\]"):
        ewd.DataParallel()
    with pytest.raises(BackendUnavailable, match=r"energetic_wgpu\[distributed\]"):
        ewd.init_from_env(ewd.WorldEnv(0, 2, 0, "127.0.0.1", 1))


def test_the_core_does_not_import_torch():
    code = (
        "import sys, energetic_wgpu, energetic_wgpu.distributed, energetic_wgpu.trainer, energetic_wgpu.cli; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_world_from_env_reads_the_launcher_variables():
    assert ewd.world_from_env({}) is None
    w = ewd.world_from_env({"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "1234"})
    assert w == ewd.WorldEnv(rank=1, world_size=2, local_rank=1, master_addr="10.0.0.1", master_port=1234)
    with pytest.raises(ew.ConfigError, match=r"\$RANK must be in \[0, \$WORLD_SIZE - 1 = 1\], got 2"):
        ewd.world_from_env({"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "a"})
    with pytest.raises(ew.ConfigError, match=r"\$MASTER_ADDR must be set"):
        ewd.world_from_env({"WORLD_SIZE": "2", "RANK": "0"})
    with pytest.raises(ew.ConfigError, match=r"\$WORLD_SIZE must be an int >= 1, got 'two'"):
        ewd.world_from_env({"WORLD_SIZE": "two", "RANK": "0"})


# ------------------------------------------------------------ one-rank process group, in process
@pytest.fixture(scope="module")
def world1():
    if not ewd.torch_available():
        pytest.skip("no torch: pip install 'energetic_wgpu[distributed]'")
    import torch.distributed as dist

    if dist.is_initialized():
        pytest.skip("a process group is already initialized in this process")
    with pytest.raises(ew.errors.DistributedError, match="torch.distributed is not initialized"):
        ewd.DataParallel()
    ewd.init_from_env(ewd.WorldEnv(0, 1, 0, "127.0.0.1", ewd.free_port()), timeout=30)
    yield ewd.DataParallel()
    dist.destroy_process_group()


def test_one_rank_all_reduce_leaves_gradients_bit_identical(world1, backend):
    r = _router(backend)
    x = np.random.default_rng(0).random((3, r.graph.num_nodes))
    lg = r.loss_and_grads(x, x * 0.5)
    before = [backend.to_numpy(g).copy() for g in lg.grads.as_list()]
    res = world1.all_reduce_gradients(lg.grads, 7.0, loss=lg.loss_array, flags=(1.0, 0.0))
    assert (world1.rank, world1.world_size) == (0, 1)
    assert res.total_weight == 7.0 and res.flags == (1.0, 0.0) and res.loss == lg.loss
    assert res.gradient_values == sum(b.size for b in before)
    for b, g in zip(before, lg.grads.as_list()):
        np.testing.assert_array_equal(backend.to_numpy(g), b)


def test_all_reduce_argument_errors(world1, np_backend):
    r = _router(np_backend)
    lg = r.loss_and_grads(np.ones((2, r.graph.num_nodes)), np.zeros((2, r.graph.num_nodes)))
    with pytest.raises(InvalidArgumentError, match="weight must be a finite number >= 0, got -1.0"):
        world1.all_reduce_gradients(lg.grads, -1.0)
    with pytest.raises(InvalidArgumentError, match="grads must be the Gradients of Router.backward"):
        world1.all_reduce_gradients({"q": 1})
    with pytest.raises(InvalidArgumentError, match=r"grads\[1\] must be a CPU torch tensor, got ndarray"):
        import torch

        world1.all_reduce_gradients([torch.zeros(2), np.zeros(2)])


def test_torch_module_without_grad_names_the_parameter(world1):
    import torch

    module = torch.nn.Linear(2, 1)
    with pytest.raises(InvalidArgumentError, match="parameter 'weight' has no .grad"):
        world1.all_reduce_gradients(module)
    module(torch.ones(1, 2)).sum().backward()
    want = [p.grad.clone() for p in module.parameters()]
    res = world1.all_reduce_gradients(module, weight=2.0, loss=torch.tensor(0.5))
    assert res.loss == 0.5 and res.gradient_values == 3
    for p, g in zip(module.parameters(), want):
        assert torch.equal(p.grad, g)


def test_replica_checksum_follows_the_parameters(world1, np_backend):
    a, b = _router(np_backend), _router(np_backend)
    ca = world1.check_replicas(a, 0)
    assert len(ca) == 14 and ca == world1.check_replicas(b, 0)
    b.bias[0] += 1e-7
    assert world1.check_replicas(b, 1) != ca


_EXIT_PROBE = """
import atexit, sys
import torch.distributed as dist
from energetic_wgpu import distributed as ewd
# registered before init_from_env's handler, so it runs after it (atexit is last in, first out)
atexit.register(lambda: print("initialized at exit:", dist.is_initialized(), flush=True))
ewd.init_from_env(ewd.WorldEnv(0, 1, 0, "127.0.0.1", ewd.free_port()), timeout=30)
ewd.init_from_env(ewd.WorldEnv(0, 1, 0, "127.0.0.1", 1), timeout=30)  # already joined: returns
print("initialized:", dist.is_initialized(), flush=True)
"""


def test_init_from_env_destroys_its_group_at_exit():
    """A script that never calls destroy_process_group() leaves with its group destroyed (gloo's
    threads joined), instead of risking a SIGABRT at interpreter teardown."""
    if not ewd.torch_available():
        pytest.skip("no torch: pip install 'energetic_wgpu[distributed]'")
    proc = subprocess.run([sys.executable, "-c", _EXIT_PROBE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == ["initialized: True", "initialized at exit: False"], proc.stdout
