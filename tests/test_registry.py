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


def test_auto_falls_back_to_numpy_with_one_warning(monkeypatch):
    monkeypatch.delenv(reg.ENV_VAR, raising=False)
    monkeypatch.setitem(reg._REGISTRY, "wgpu", ("energetic_wgpu.backends.does_not_exist", "WgpuBackend"))
    monkeypatch.setattr(reg, "_instances", {})
    monkeypatch.setattr(reg, "_failures", {})
    monkeypatch.setattr(reg, "_warned_fallback", False)
    with pytest.warns(RuntimeWarning, match=r"falling back to the NumPy backend \(backend 'wgpu' cannot be imported"):
        be = ew.get_backend("auto", adapter="whatever")
    assert isinstance(be, NumpyBackend)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ew.get_backend("auto") is be  # warned once only
    with pytest.raises(BackendUnavailable, match="backend 'wgpu' cannot be imported"):
        ew.get_backend("wgpu")


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
