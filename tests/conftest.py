"""Shared fixtures: a ``backend`` fixture over NumPy and every wgpu adapter found.

The adapters are listed in pytest's header, so a CI log shows which ones ran. An adapter
that cannot start is skipped with the stored reason, never silently.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="xdg-"))

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci", derandomize=True, max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _adapters() -> tuple[list[dict], str | None]:
    try:
        from energetic_wgpu.backends.webgpu import list_adapters

        return list_adapters(), None
    except Exception as exc:  # wgpu missing, no adapter, backend not built
        return [], f"{type(exc).__name__}: {exc}"


ADAPTERS, ADAPTER_ERROR = _adapters()


def pytest_report_header(config):
    lines = []
    if ADAPTERS:
        for a in ADAPTERS:
            lines.append(f"wgpu adapter {a['index']}: {a['backend_type']} / {a['description']} ({a['adapter_type']})")
    else:
        lines.append(f"wgpu adapters: none ({ADAPTER_ERROR})")
    return lines


_wgpu_backends: dict[int, object] = {}


def wgpu_backend_for(index: int):
    """A WgpuBackend on adapter ``index`` (one per adapter per session); skips with the reason."""
    from energetic_wgpu.errors import BackendUnavailable

    if index not in _wgpu_backends:
        try:
            from energetic_wgpu.backends.webgpu import WgpuBackend

            _wgpu_backends[index] = WgpuBackend(adapter=index)
        except (BackendUnavailable, ImportError) as exc:
            _wgpu_backends[index] = exc
    b = _wgpu_backends[index]
    if isinstance(b, Exception):
        pytest.skip(f"wgpu adapter {index} unavailable: {b}")
    return b


def _backend_params():
    params = [pytest.param("numpy", id="numpy")]
    if ADAPTERS:
        for a in ADAPTERS:
            params.append(pytest.param(a["index"], id=f"wgpu-{a['backend_type'].lower()}"))
    else:
        params.append(
            pytest.param(None, id="wgpu", marks=pytest.mark.skip(reason=f"no wgpu adapter: {ADAPTER_ERROR}"))
        )
    return params


@pytest.fixture(params=_backend_params(), scope="session")
def backend(request):
    """Every backend: NumPy (float32) and each wgpu adapter."""
    if request.param == "numpy":
        from energetic_wgpu.backends.numpy_backend import NumpyBackend

        return NumpyBackend()
    return wgpu_backend_for(request.param)


@pytest.fixture(params=[p for p in _backend_params() if p.values[0] != "numpy"], scope="session")
def gpu_backend(request):
    """Each wgpu adapter (skipped when none)."""
    return wgpu_backend_for(request.param)


@pytest.fixture(autouse=True)
def _degree_bins_back_to_auto():
    """A test may switch a wgpu backend's ``degree_bins`` (to run both the "gpu" and the "cpu"
    bins on one adapter): the session's backends go back to "auto" after every test."""
    yield
    for b in _wgpu_backends.values():
        if not isinstance(b, Exception):
            b.degree_bins = "auto"


def use_bins(backend, bins: str):
    """Switch a wgpu ``backend`` to the degree bins ``bins`` ("gpu" or "cpu"); NumPy: no-op."""
    if hasattr(backend, "degree_bins"):
        backend.degree_bins = bins
    return backend


@pytest.fixture(scope="session")
def np_backend():
    from energetic_wgpu.backends.numpy_backend import NumpyBackend

    return NumpyBackend()


@pytest.fixture(scope="session")
def np64():
    from energetic_wgpu.backends.numpy_backend import NumpyBackend

    return NumpyBackend("float64")


from parity import assert_parity  # noqa: E402,F401  (the one parity rule, tests/parity.py; kept importable from here)
