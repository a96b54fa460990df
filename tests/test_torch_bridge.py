"""energetic_wgpu.torch: the router as a torch.nn.Module (gradcheck, parity with the library's
backward and between backends, training with torch.optim.AdamW, upload/readback counts)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is an optional extra (pip install 'energetic_wgpu[torch]')")

import energetic_wgpu as ew  # noqa: E402
from energetic_wgpu.errors import InvalidArgumentError, ShapeError  # noqa: E402
from energetic_wgpu.torch import EnergeticRouter  # noqa: E402

from parity import assert_parity  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny tensors: on a small shared CI machine torch's thread pool only waits for busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _edge_index(n: int = 7, e: int = 20, seed: int = 0) -> torch.Tensor:
    """A shuffled random edge_index with duplicates, self-loops and a sink (node n-1)."""
    rng = np.random.default_rng(seed)
    src = rng.integers(0, n - 1, size=e)
    dst = rng.integers(0, n, size=e)
    src[:2], dst[:2] = 3, 5  # a duplicate edge
    return torch.from_numpy(np.stack([src, dst]))


def _energies(b: int, n: int, dtype=torch.float32, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, n, generator=g, dtype=dtype)


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("top_k,steps,retain_sinks", [(0, 1, False), (2, 3, True)])
def test_gradcheck_float64_numpy(top_k, steps, retain_sinks):
    mod = EnergeticRouter(
        _edge_index(), num_nodes=7, dim=3, tau=0.8, alpha=0.9, top_k=top_k, steps=steps,
        retain_sinks=retain_sinks, backend="numpy", seed=2,
    ).double()
    with torch.no_grad():
        mod.bias.copy_(torch.linspace(-1.0, 1.0, mod.bias.numel(), dtype=torch.float64))  # no top-k ties
    x = _energies(2, 7, torch.float64).requires_grad_()
    active = torch.tensor([True, True, False, True, True, True, True])

    def fn(x, q, k, bias):  # q, k, bias are the module's own tensors: gradcheck perturbs them in place
        return mod(x, active)

    assert torch.autograd.gradcheck(fn, (x, mod.q, mod.k, mod.bias), eps=1e-6, atol=1e-7, rtol=1e-5)
    assert mod._routers[torch.float64].backend.describe() == "numpy (float64)"
    # an unbatched [N] input gives an [N] output and an [N] gradient
    x1 = _energies(1, 7, torch.float64)[0].requires_grad_()
    assert torch.autograd.gradcheck(lambda x: mod(x), (x1,), eps=1e-6, atol=1e-7)
    assert mod(x1).shape == (7,)


def test_gradients_are_the_librarys_backward():
    ei = _edge_index()
    mod = EnergeticRouter(ei, num_nodes=7, dim=4, top_k=2, steps=2, backend="numpy", seed=3)
    x = _energies(3, 7).requires_grad_()
    w = _energies(3, 7, seed=9)
    (mod(x) * w).sum().backward()

    router = ew.Router(mod.graph, ew.RouterParams.init(mod.graph, dim=4, top_k=2, seed=3), "numpy")
    out = router.forward(x.detach().numpy(), steps=2)
    np.testing.assert_array_equal(mod(x).detach().numpy(), out.next_energies)
    g = router.backward(out, w.numpy())
    for name, got, ref in [("energies", x.grad, g.energies), ("q", mod.q.grad, g.q), ("k", mod.k.grad, g.k),
                           ("bias", mod.bias.grad, g.bias)]:
        assert got.dtype == torch.float32, name
        np.testing.assert_array_equal(got.numpy(), ref, err_msg=name)
    assert float(mod.q.grad.abs().max()) > 0 and float(mod.bias.grad.abs().max()) > 0


def test_numpy_backend_shares_parameter_memory():
    mod = EnergeticRouter(_edge_index(), num_nodes=7, dim=4, backend="numpy")
    y = mod(_energies(2, 7))
    router = mod._routers[torch.float32]
    for live, p in zip(router.parameters(), (mod.q, mod.k, mod.bias)):
        assert np.shares_memory(live, p.detach().numpy())
    with torch.no_grad():
        mod.bias.add_(1.0)  # a shift per source: pi unchanged, but the router sees the new values
    assert float(router.bias[0]) == pytest.approx(float(mod.bias.detach()[0]))
    torch.testing.assert_close(mod(_energies(2, 7)), y)


def test_edge_pi_in_the_callers_edge_order():
    ei = _edge_index()
    mod = EnergeticRouter(ei, num_nodes=7, dim=4, backend="numpy", seed=1)
    pi = mod.edge_pi()
    assert pi.shape == (ei.shape[1],) and not pi.requires_grad
    router = mod._routers[torch.float32]
    csr_pi = router.forward(np.zeros((0, 7), np.float32)).edge_pi
    perm = mod.graph.edge_perm
    np.testing.assert_array_equal(pi.numpy()[perm], csr_pi)
    src = ei[0].numpy()
    for j in np.unique(src):  # pi sums to one over each source's edges, in the caller's order too
        assert float(pi.numpy()[src == j].sum()) == pytest.approx(1.0, abs=1e-6)


def test_deepcopy_and_torch_save_round_trip(tmp_path):
    import copy

    mod = EnergeticRouter(_edge_index(), num_nodes=7, dim=4, backend="numpy", seed=5)
    x = _energies(2, 7)
    y = mod(x)
    twin = copy.deepcopy(mod)
    torch.testing.assert_close(twin(x), y)
    with torch.no_grad():
        twin.bias.add_(torch.arange(float(twin.bias.numel())))  # the copy has its own parameters
    assert not torch.equal(twin(x), y)
    torch.testing.assert_close(mod(x), y)
    path = tmp_path / "router.pt"
    torch.save(mod, path)
    loaded = torch.load(path, weights_only=False)
    assert loaded.backend is mod.backend  # the registry's cached NumPy backend
    torch.testing.assert_close(loaded(x), y)
    assert loaded.graph.edge_perm.tolist() == mod.graph.edge_perm.tolist()


# --------------------------------------------------------------------------- training


def test_adamw_loop_reduces_the_loss():
    torch.manual_seed(0)
    teacher = EnergeticRouter(_edge_index(), num_nodes=7, dim=4, tau=0.7, backend="numpy", seed=11)
    with torch.no_grad():
        teacher.q.mul_(6.0)
    x = _energies(16, 7, seed=4)
    with torch.no_grad():
        target = teacher(x)
    student = EnergeticRouter(_edge_index(), num_nodes=7, dim=4, tau=0.7, backend="numpy", seed=12)
    opt = torch.optim.AdamW(student.parameters(), lr=0.05)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(student(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0], losses[::10]


# --------------------------------------------------------------------------- wgpu


def test_wgpu_module_matches_numpy(gpu_backend):
    ei = _edge_index(40, 300, seed=5)
    kw = dict(num_nodes=40, dim=8, tau=0.9, top_k=3, steps=2, seed=7)
    ref = EnergeticRouter(ei, backend="numpy", **kw)
    gpu = EnergeticRouter(ei, backend=gpu_backend, **kw)
    x = _energies(5, 40, seed=2)
    w = _energies(5, 40, seed=3)
    xr, xg = x.clone().requires_grad_(), x.clone().requires_grad_()
    yr, yg = ref(xr), gpu(xg)
    assert_parity(yg.detach().numpy(), yr.detach().numpy(), "next_energies")
    (yr * w).sum().backward()
    (yg * w).sum().backward()
    for name, a, b in [("energies", xg.grad, xr.grad), ("q", gpu.q.grad, ref.q.grad), ("k", gpu.k.grad, ref.k.grad),
                       ("bias", gpu.bias.grad, ref.bias.grad)]:
        assert_parity(a.numpy(), b.numpy(), name)
    assert_parity(gpu.edge_pi().numpy(), ref.edge_pi().numpy(), "edge_pi")
    with pytest.raises(ShapeError, match="float64 parameters need the NumPy backend; this module's backend is 'wgpu'"):
        gpu.double()(x.double())


def test_wgpu_uploads_only_changed_parameters_and_reads_back_once(gpu_backend):
    be = gpu_backend
    mod = EnergeticRouter(_edge_index(30, 200, seed=6), num_nodes=30, dim=8, backend=be)
    opt = torch.optim.AdamW(mod.parameters(), lr=0.01)
    x = _energies(4, 30)
    for _ in range(3):  # warm-up: pipelines and the buffer pool
        opt.zero_grad()
        mod(x).square().sum().backward()
        opt.step()
    param_bytes = 4 * (mod.q.numel() + mod.k.numel() + mod.bias.numel())

    before = be.counters.snapshot()
    mod(x)  # parameters changed by the last step: uploaded once (the output and its graph are dropped)
    d1 = {k: v - before[k] for k, v in be.counters.snapshot().items()}
    assert d1["readbacks"] == 1 and d1["bytes_read_back"] == x.numel() * 4
    assert d1["bytes_uploaded"] == param_bytes + x.numel() * 4
    assert d1["buffers_created"] == 0

    before = be.counters.snapshot()
    mod(x)  # unchanged parameters: only the energies travel
    d2 = {k: v - before[k] for k, v in be.counters.snapshot().items()}
    assert d2["bytes_uploaded"] == x.numel() * 4 and d2["readbacks"] == 1 and d2["buffers_created"] == 0

    with torch.no_grad():
        mod.bias.add_(0.5)  # one parameter changed: only it is uploaded
    before = be.counters.snapshot()
    mod(x)
    d3 = {k: v - before[k] for k, v in be.counters.snapshot().items()}
    assert d3["bytes_uploaded"] == mod.bias.numel() * 4 + x.numel() * 4


# --------------------------------------------------------------------------- errors


def test_bad_arguments_raise_library_errors():
    ei = _edge_index()
    with pytest.raises(InvalidArgumentError, match="num_nodes is only for an edge_index graph"):
        EnergeticRouter(ew.Graph.from_edge_index(ei), num_nodes=7)
    with pytest.raises(InvalidArgumentError, match="steps must be an int >= 1, got 0"):
        EnergeticRouter(ei, steps=0, backend="numpy")
    with pytest.raises(InvalidArgumentError, match="unknown backend 'cuda'"):
        EnergeticRouter(ei, backend="cuda")
    mod = EnergeticRouter(ei, num_nodes=7, dim=2, backend="numpy")
    with pytest.raises(ShapeError, match="energies must have the parameters' dtype torch.float32, got torch.float64"):
        mod(_energies(1, 7, torch.float64))
    with pytest.raises(ShapeError, match=r"energies must have shape \[N\] or \[B, N\] with N = 7, got \(2, 6\)"):
        mod(torch.zeros(2, 6))
    with pytest.raises(InvalidArgumentError, match="energies must be finite"):
        mod(torch.full((7,), float("nan")))
    with pytest.raises(InvalidArgumentError, match="energies must be a torch.Tensor, got ndarray"):
        mod(np.zeros(7, np.float32))
    with pytest.raises(InvalidArgumentError, match="active must hold only 0 and 1"):
        mod(torch.zeros(7), torch.full((7,), 0.5))
    assert mod(torch.zeros(0, 7)).shape == (0, 7)  # and the module still works after the errors


# --------------------------------------------------------------------------- example


def test_torch_example_runs(capsys):
    spec = importlib.util.spec_from_file_location("torch_module_example", ROOT / "examples" / "torch_module.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    accuracy = example.main(["--backend", "numpy", "--steps", "60"])
    assert accuracy >= 0.9
    out = capsys.readouterr().out
    assert "torch_module: OK" in out and "backend numpy (float32)" in out
