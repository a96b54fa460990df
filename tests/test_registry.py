"""Backend registry, to_numpy and the package's public names (STYLE §2)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import energetic_wgpu as ew
from energetic_wgpu import backends as reg
from energetic_wgpu.backends.numpy_backend import NumpyBackend
from energetic_wgpu.errors import BackendUnavailable, EnergeticError, InvalidArgumentError


def test_available_backends_includes_numpy():
    names = ew.available_backends()
    assert "numpy" in names
    status = ew.backend_status()
    assert status["numpy"] == (True, "numpy (float32)")
    for name, (ok, why) in status.items():
        assert isinstance(why, str) and why, name


def test_get_numpy_backend_and_dtype():
    b32 = ew.get_backend("numpy")
    b64 = ew.get_backend("numpy", dtype="float64")
    assert isinstance(b32, NumpyBackend) and b32.dtype == np.float32
    assert isinstance(b64, NumpyBackend) and b64.dtype == np.float64
    assert ew.get_backend("numpy", dtype="float64") is b64  # cached per options
    assert ew.get_backend(" NumPy ") is b32
    assert ew.get_backend(b64) is b64  # a Backend passes through
    assert b64.describe() == "numpy (float64)"


def test_unknown_backend_name():
    msg = r"unknown backend 'cuda'; choose one of \['numpy', 'wgpu'\] or 'auto'"
    with pytest.raises(InvalidArgumentError, match=msg):
        ew.get_backend("cuda")
    with pytest.raises(InvalidArgumentError, match="backend name must be a str, got int"):
        ew.get_backend(3)


def test_bad_numpy_options_are_the_callers_error():
    with pytest.raises(InvalidArgumentError, match="dtype must be 'float32' or 'float64'"):
        ew.get_backend("numpy", dtype="int8")
    with pytest.raises(TypeError):
        ew.get_backend("numpy", colour="red")


def test_env_var_honoured_by_auto(monkeypatch):
    monkeypatch.setenv(reg.ENV_VAR, "numpy")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit choice: no fallback warning
        be = ew.get_backend("auto")
    assert isinstance(be, NumpyBackend)
    assert ew.get_backend() is be
    monkeypatch.setenv(reg.ENV_VAR, " NUMPY ")
    assert ew.get_backend("auto") is be


def test_env_var_invalid(monkeypatch):
    monkeypatch.setenv(reg.ENV_VAR, "tpu")
    with pytest.raises(InvalidArgumentError, match=r"\$ENERGETIC_BACKEND='tpu' is not a backend"):
        ew.get_backend("auto")


def test_explicit_backend_that_cannot_start_raises_with_reason(monkeypatch):
    monkeypatch.setitem(reg._REGISTRY, "broken", ("energetic_wgpu.backends.does_not_exist", "Nope"))
    msg = r"backend 'broken' cannot be imported: ModuleNotFoundError: .*does_not_exist"
    with pytest.raises(BackendUnavailable, match=msg) as info:
        ew.get_backend("broken")
    assert isinstance(info.value, EnergeticError)
    assert "does_not_exist" in reg._failures["broken"]
    status = ew.backend_status()
    assert status["broken"][0] is False and "does_not_exist" in status["broken"][1]
    assert "broken" not in ew.available_backends()
    monkeypatch.delitem(reg._failures, "broken", raising=False)


def test_backend_whose_constructor_fails_raises_with_reason(monkeypatch):
    class Exploding(NumpyBackend):
        def __init__(self, **kw):
            raise RuntimeError("no adapter found")

    import energetic_wgpu.backends.numpy_backend as nb

    monkeypatch.setattr(nb, "Exploding", Exploding, raising=False)
    monkeypatch.setitem(reg._REGISTRY, "exploding", ("energetic_wgpu.backends.numpy_backend", "Exploding"))
    msg = "backend 'exploding' failed to start: RuntimeError: no adapter found"
    with pytest.raises(BackendUnavailable, match=msg):
        ew.get_backend("exploding")
    monkeypatch.delitem(reg._failures, "exploding", raising=False)


def _fresh_auto(monkeypatch, adapters):
    """Reset auto mode's remembered state and make ``list_adapters`` report ``adapters``
    (a list of adapter dicts, or an exception to raise)."""

    def fake_list():
        if isinstance(adapters, Exception):
            raise adapters
        return adapters

    monkeypatch.delenv(reg.ENV_VAR, raising=False)
    monkeypatch.setattr(reg, "list_adapters", fake_list)
    monkeypatch.setattr(reg, "_instances", {})
    monkeypatch.setattr(reg, "_failures", {})
    monkeypatch.setattr(reg, "_warned_fallback", False)
    monkeypatch.setattr(reg, "_auto_choice", None)


LAVAPIPE = {"index": 0, "name": "llvmpipe (LLVM 15.0.6, 256 bits)", "description": "Mesa 22.3.6",
            "backend_type": "Vulkan", "adapter_type": "CPU", "vendor": "llvmpipe"}
LLVMPIPE_GL = {"index": 1, "name": "llvmpipe (LLVM 15.0.6, 256 bits)", "description": "4.5 (Core Profile) Mesa",
               "backend_type": "OpenGL", "adapter_type": "Unknown", "vendor": ""}
IGPU = {"index": 2, "name": "Intel(R) UHD Graphics 630", "description": "", "backend_type": "Vulkan",
        "adapter_type": "IntegratedGPU", "vendor": "intel"}
DGPU = {"index": 3, "name": "NVIDIA GeForce RTX 4090", "description": "", "backend_type": "Vulkan",
        "adapter_type": "DiscreteGPU", "vendor": "nvidia"}


class FakeWgpu(NumpyBackend):
    """Stands in for WgpuBackend: records the adapter auto mode asked for."""

    name = "wgpu"

    def __init__(self, adapter=None, **kw):
        super().__init__(**kw)
        self.adapter = adapter


@pytest.fixture
def fake_wgpu(monkeypatch):
    import energetic_wgpu.backends.numpy_backend as nb

    monkeypatch.setattr(nb, "FakeWgpu", FakeWgpu, raising=False)
    monkeypatch.setitem(reg._REGISTRY, "wgpu", ("energetic_wgpu.backends.numpy_backend", "FakeWgpu"))


def test_auto_picks_numpy_when_every_adapter_is_software(monkeypatch, fake_wgpu, caplog):
    _fresh_auto(monkeypatch, [LAVAPIPE, LLVMPIPE_GL])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a choice, not a failure: no warning
        with caplog.at_level("INFO", logger="energetic_wgpu"):
            be = ew.get_backend("auto")
    assert type(be) is NumpyBackend and be.dtype == np.float32
    why = ew.explain_auto()
    assert why.startswith("numpy, since every wgpu adapter is a CPU/software one ([0] llvmpipe")
    assert "[1] llvmpipe (LLVM 15.0.6, 256 bits) (OpenGL, Unknown)" in why and "ENERGETIC_BACKEND=wgpu" in why
    assert [r.getMessage() for r in caplog.records] == [f"energetic_wgpu: backend auto -> {why}"]
    assert ew.get_backend("auto", dtype="float64").dtype == np.float64


def test_auto_picks_a_hardware_adapter_discrete_first(monkeypatch, fake_wgpu):
    _fresh_auto(monkeypatch, [LAVAPIPE, IGPU, DGPU])
    be = ew.get_backend("auto")
    assert isinstance(be, FakeWgpu) and be.adapter == 3
    assert ew.explain_auto() == "wgpu on the hardware adapter [3] NVIDIA GeForce RTX 4090 (Vulkan, DiscreteGPU)"
    _fresh_auto(monkeypatch, [LAVAPIPE, IGPU])
    assert ew.get_backend("auto").adapter == 2


def test_env_var_wgpu_forces_wgpu_on_software_adapters(monkeypatch, fake_wgpu):
    _fresh_auto(monkeypatch, [LAVAPIPE])
    monkeypatch.setenv(reg.ENV_VAR, "wgpu")
    assert isinstance(ew.get_backend("auto"), FakeWgpu)
    assert ew.explain_auto() == "wgpu, since $ENERGETIC_BACKEND=wgpu"


def test_auto_with_no_adapter_or_without_wgpu(monkeypatch, fake_wgpu):
    _fresh_auto(monkeypatch, [])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert type(ew.get_backend("auto")) is NumpyBackend
    assert ew.explain_auto() == "numpy, since wgpu found no adapter"
    _fresh_auto(monkeypatch, BackendUnavailable("wgpu cannot be imported: ImportError: nope"))
    with pytest.warns(RuntimeWarning, match=r"backend auto -> numpy, since wgpu is unavailable: wgpu cannot be imported"):
        assert type(ew.get_backend("auto")) is NumpyBackend


def test_auto_falls_back_to_numpy_with_one_warning(monkeypatch):
    _fresh_auto(monkeypatch, [DGPU])
    monkeypatch.setitem(reg._REGISTRY, "wgpu", ("energetic_wgpu.backends.does_not_exist", "WgpuBackend"))
    with pytest.warns(RuntimeWarning, match=r"backend auto -> numpy, since wgpu failed: backend 'wgpu' cannot be imported"):
        be = ew.get_backend("auto", adapter="whatever")
    assert isinstance(be, NumpyBackend)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ew.get_backend("auto") is be  # warned once only (the hardware adapter fails too)
    assert ew.explain_auto().startswith("numpy, since wgpu failed: backend 'wgpu' cannot be imported")
    with pytest.raises(BackendUnavailable, match="backend 'wgpu' cannot be imported"):
        ew.get_backend("wgpu")


def test_software_adapter_detection():
    from energetic_wgpu.backends.auto import is_software_adapter

    assert is_software_adapter(LAVAPIPE) and is_software_adapter(LLVMPIPE_GL)
    assert is_software_adapter({"adapter_type": "Unknown", "name": "SwiftShader Device (Subzero)"})
    assert not is_software_adapter(IGPU) and not is_software_adapter(DGPU)
    assert not is_software_adapter({"adapter_type": "Unknown", "name": "Apple M2"})


def test_top_level_list_adapters_is_the_wgpu_one():
    assert ew.list_adapters is reg.list_adapters
    try:
        adapters = ew.list_adapters()
    except BackendUnavailable as exc:
        pytest.skip(f"wgpu unavailable: {exc}")
    assert [a["index"] for a in adapters] == list(range(len(adapters)))
    assert all({"name", "backend_type", "adapter_type", "limits"} <= set(a) for a in adapters)


def test_to_numpy():
    a = np.arange(3.0)
    assert ew.to_numpy(a) is a
    assert ew.to_numpy([1, 2, 3]).tolist() == [1, 2, 3]
    assert ew.to_numpy(2.5).shape == ()
    be = ew.get_backend("numpy")
    x = be.asarray([1.0, 2.0])
    out = ew.to_numpy(x)
    assert out.dtype == np.float32 and out.tolist() == [1.0, 2.0]
    copy = be.to_numpy(x)
    copy[0] = 9.0
    assert x[0] == 1.0  # Backend.to_numpy copies


def test_to_numpy_on_an_object_with_a_backend():
    class Fake:
        def __init__(self, backend):
            self.backend = backend
            self.data = np.array([4.0, 5.0])

    class Be(NumpyBackend):
        def to_numpy(self, x):
            return x.data * 2

    assert ew.to_numpy(Fake(Be())).tolist() == [8.0, 10.0]


def test_public_names():
    for name in (
        "Graph", "GraphConfig", "build_lattice", "build_lattice_3d", "available_backends", "get_backend",
        "to_numpy", "RouterParams", "Router", "AdamW", "losses", "EnergeticError", "BackendUnavailable",
        "ConfigError", "ShapeError", "InvalidArgumentError",
    ):  # fmt: skip
        assert hasattr(ew, name), name
        assert name in ew.__all__, name
    assert callable(ew.losses.mse) and callable(ew.losses.cross_entropy) and callable(ew.losses.entropy_regularization)
    errors = (ew.BackendUnavailable, ew.ShapeError, ew.ConfigError, ew.InvalidArgumentError, ew.CheckpointError)
    for exc in errors + (ew.ShaderCompileError,):
        assert issubclass(exc, ew.EnergeticError)
    assert issubclass(ew.ShapeError, ValueError) and issubclass(ew.ConfigError, ValueError)
    assert isinstance(ew.__version__, str)
