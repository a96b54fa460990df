"""The parity rule and the parity harness of the tests (docs/testing.md).

* :func:`assert_parity` — THE comparison: for floats ``max|a - b| <= rtol * max(1, max|ref|)``
  (rtol 1e-5 for float32), bool and integer outputs exactly, shapes always.
* :func:`numpy_and_wgpu` — a decorator in the style of CuPy's ``numpy_cupy_allclose``: the test
  body takes a backend first and returns ``{name: array}``; the test runs it on the NumPy
  backend (the expected values) and twice on the wgpu adapter of the test instance (the
  ``gpu_backend`` fixture: every adapter), asserts the two GPU runs bit-identical and each
  output within :func:`assert_parity` of NumPy.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from typing import Any, Callable

import numpy as np

__all__ = ["assert_parity", "numpy_and_wgpu", "to_host", "forced_limits"]


def assert_parity(got: Any, ref: Any, name: str = "array", rtol: float = 1e-5) -> None:
    """max|got - ref| <= rtol * max(1, max|ref|) (exact for bool/int ``ref``); shapes equal."""
    got = np.asarray(got)
    ref = np.asarray(ref)
    assert got.shape == ref.shape, f"{name}: shape {got.shape} != {ref.shape}"
    if ref.size == 0:
        return
    if ref.dtype.kind in "biu":
        bad = int(np.count_nonzero(got.astype(ref.dtype) != ref))
        assert bad == 0, f"{name}: {bad} of {ref.size} elements differ (exact comparison)"
        return
    scale = max(1.0, float(np.max(np.abs(ref))))
    err = float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64))))
    assert err <= rtol * scale, f"{name}: max|err| = {err:.3e} > {rtol:.0e} * {scale:.3e}"


def to_host(backend: Any, outputs: dict[str, Any]) -> dict[str, np.ndarray]:
    """Every output read back to numpy (``backend.to_numpy``)."""
    return {k: np.asarray(backend.to_numpy(v)) for k, v in outputs.items()}


def numpy_and_wgpu(rtol: float = 1e-5) -> Callable[[Callable[..., dict[str, Any]]], Callable[..., None]]:
    """Decorate ``body(backend, *args) -> {name: array}`` into a test over every wgpu adapter.

    The test's parameters are the body's, with ``backend`` replaced by the fixtures
    ``gpu_backend`` and ``np_backend`` (so ``pytest.mark.parametrize`` works as usual)."""

    def decorate(body: Callable[..., dict[str, Any]]) -> Callable[..., None]:
        sig = inspect.signature(body)
        rest = [p for name, p in sig.parameters.items() if name != "backend"]

        @functools.wraps(body)
        def test(gpu_backend: Any, np_backend: Any, *args: Any, **kwargs: Any) -> None:
            expected = to_host(np_backend, body(np_backend, *args, **kwargs))
            first = to_host(gpu_backend, body(gpu_backend, *args, **kwargs))
            second = to_host(gpu_backend, body(gpu_backend, *args, **kwargs))
            assert set(first) == set(expected), (sorted(first), sorted(expected))
            for name, ref in expected.items():
                assert first[name].tobytes() == second[name].tobytes(), f"{name}: two GPU runs differ"
                assert_parity(first[name], ref, name, rtol)

        params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in ("gpu_backend", "np_backend")]
        test.__signature__ = sig.replace(parameters=params + rest)  # type: ignore[attr-defined]
        return test

    return decorate


@contextlib.contextmanager
def forced_limits(backend: Any, binding: int | None = None, buffer: int | None = None) -> Any:
    """Run the block under a forced binding limit and buffer size limit (bytes; None: the
    device's): ``backend.binding_limit`` and ``backend.buffer_limit``, restored afterwards.
    Under a forced binding limit the pool's free buffers are destroyed first, so the block's
    outputs get fresh (zeroed) buffers: a split run compared with an earlier unsplit one cannot
    pass on values that run left in a recycled buffer."""
    if binding and hasattr(backend, "runtime"):
        backend.runtime.trim()
    with backend.binding_limit(binding) if binding else contextlib.nullcontext():
        with backend.buffer_limit(buffer) if buffer else contextlib.nullcontext():
            yield


def assert_steady_step(backend: Any, step: Callable[[], Any], rounds: int = 7, min_dispatches: int = 150) -> None:
    """Call ``step`` (one train step) ``rounds`` times: the last is one submit creating no
    buffer, bind group or pipeline, with as many dispatches (more than ``min_dispatches``) as
    the one before."""
    steps = []
    for _ in range(rounds):
        before = dict(backend.counters())
        step()
        steps.append({key: v - before.get(key, 0) for key, v in backend.counters().items()})
    last = steps[-1]
    assert (last["submits"], last["buffers_created"], last["bind_groups_created"], last["pipelines_created"]) == (
        1, 0, 0, 0), last
    assert last["dispatches"] == steps[-2]["dispatches"] > min_dispatches
