"""A Hypothesis fuzz of the public API on every backend.

Random shapes, dtypes, extreme values (1e39, 1e-46, NaN, inf, 1e30, subnormals), masks,
tau / alpha / top_k / steps. Every call either raises an ``EnergeticError`` whose message
starts with the name of an argument (and the NumPy backend raises the same error), or returns
outputs that match the NumPy backend: non-finite exactly where NumPy's are (float32 overflow
of accepted values, e.g. a loss of 1e30 squared), within the parity tolerance elsewhere. A
train step never leaves a non-finite parameter or moment. After every example the backend
still runs a normal forward that matches NumPy.

Bounded by ``max_examples`` (the "ci" profile is derandomized), not by wall time.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import energetic_wgpu as ew
from energetic_wgpu.backends.numpy_backend import NumpyBackend
from energetic_wgpu.errors import EnergeticError
from energetic_wgpu.optim import AdamW
from energetic_wgpu.router import Router, RouterParams

NP = NumpyBackend()
TINY = float(np.finfo(np.float32).tiny)
# two graphs: small segments with an empty one, and a node of degree 20 (the loop path)
GRAPHS = [
    ew.Graph.from_edges([0, 0, 0, 1, 1, 2, 4], [1, 2, 3, 2, 3, 3, 0], 5),
    ew.Graph.from_edges([0] * 20 + [1, 2], list(range(1, 21)) + [0, 0], 21),
]

#: accepted values, extremes included (1e30: float32 overflow of products and squares; subnormals)
GOOD_VALUES = st.one_of(st.floats(-10, 10, width=32), st.sampled_from([0.0, 1e-40, 1e-46, 1e3, 1e30]))
MODERATE = st.one_of(st.floats(-10, 10, width=32), st.sampled_from([0.0, 1e-40, 1e-46, 1e3]))
BAD_VALUES = st.sampled_from([1e39, -1e39, np.nan, np.inf, -np.inf])

#: (accepted, refused) strategies of the scalar arguments
SCALARS = {
    "tau": (st.one_of(st.floats(0.05, 5.0), st.sampled_from([TINY, 1e-3, 3e38])),
            st.sampled_from([1e-46, 1e-40, 0.0, -1.0, np.inf, np.nan, 1e39])),
    "alpha": (st.one_of(st.floats(-2.0, 2.0), st.sampled_from([0.0, 1e3])), st.sampled_from([1e39, np.nan, -np.inf])),
    "top_k": (st.sampled_from([0, 1, 2, 3, 5, 2**32 - 1]), st.sampled_from([-1, 2**32, 2**40, 1.5])),
    "steps": (st.sampled_from([1, 2, 3]), st.sampled_from([0, -1])),
    "bias_scale": (st.sampled_from([1.0, 1e30]), st.just(1e300)),
    "eps": (st.sampled_from([1e-12, 1e-3]), st.sampled_from([0.0, 1e-46, np.nan, -1.0])),
}


@st.composite
def arrays(draw: Any, shape: tuple[int, ...], good: bool, values: Any = MODERATE) -> np.ndarray:
    """A float32/float64/int64 array of ``shape``; when not ``good``: a refused value in it,
    a bool dtype or one column too many."""
    fault = None if good else draw(st.sampled_from(["value", "dtype", "shape"]))
    if fault == "shape":
        shape = shape[:-1] + (shape[-1] + 1,)
    size = int(np.prod(shape))
    flat = draw(st.lists(values, min_size=size, max_size=size))
    if fault == "value" and size:
        flat[draw(st.integers(0, size - 1))] = draw(BAD_VALUES)
    arr = np.array(flat, dtype=np.float64).reshape(shape)
    if fault == "dtype" or (fault == "value" and not size):
        return arr > 0
    dtype = draw(st.sampled_from([np.float32, np.float64, np.int64]))
    with np.errstate(over="ignore", invalid="ignore"):
        if dtype == np.int64 and fault != "value":
            return np.clip(arr, -1e6, 1e6).astype(np.int64)
        return arr.astype(np.float64 if dtype == np.int64 else dtype)


@st.composite
def masks(draw: Any, shape: tuple[int, ...], good: bool) -> Any:
    """None, bool, or 0/1 numbers; when not ``good``: a value other than 0 and 1."""
    size = int(np.prod(shape))
    bits = np.array(draw(st.lists(st.booleans(), min_size=size, max_size=size)), dtype=bool).reshape(shape)
    if not good:  # (an empty batch has no element to spoil: a mask of the wrong shape instead)
        out = bits.astype(np.float64) if size else np.zeros(shape[:-1] + (shape[-1] + 1,))
        if out.size:
            out.reshape(-1)[0] = draw(st.sampled_from([0.5, 2.0, -1.0, np.nan]))
        return out
    kind = draw(st.sampled_from(["none", "bool", "float01", "int01"]))
    return {"none": None, "bool": bits, "float01": bits.astype(np.float32), "int01": bits.astype(np.int32)}[kind]


@st.composite
def calls(draw: Any, train: bool) -> dict[str, Any]:
    """One call's arguments: all accepted (half the examples) or exactly one refused."""
    g = draw(st.sampled_from(GRAPHS))
    n = g.num_nodes
    arrays_ = ["energies", "active"] + (["target", "mask"] if train else ["grad_next"])
    scalars = [k for k in SCALARS if train or k != "eps"]
    fields = scalars + arrays_
    bad = draw(st.sampled_from([None] * len(fields) + fields))
    case: dict[str, Any] = {"graph": g, "bad": bad, "retain_sinks": draw(st.booleans())}
    for k in scalars:
        good_s, bad_s = SCALARS[k]
        case[k] = draw(bad_s if k == bad else good_s)
    if train and case["tau"] in (TINY, 3e38):
        case["tau"] = 1e-3  # the backward at these: see test_hostile_api's smallest-tau test
    shape = (draw(st.sampled_from([0, 1, 2, 3])), n) if draw(st.booleans()) else (n,)
    case["energies"] = draw(arrays(shape, bad != "energies", GOOD_VALUES))
    case["active"] = draw(masks((n,), bad != "active"))
    if train:
        case["loss"] = draw(st.sampled_from(["mse", "cross_entropy"]))
        case["target"] = draw(arrays(shape, bad != "target"))
        mask = draw(masks(shape, bad != "mask"))
        case["mask"] = mask if case["loss"] == "mse" or bad == "mask" else None
    else:
        case["grad_next"] = draw(arrays(shape, bad != "grad_next"))
        case["keep_history"] = draw(st.sampled_from([True, True, False]))
    return case


def _params(case: dict[str, Any]) -> RouterParams:
    g = case["graph"]
    p = RouterParams.init(g, 3, seed=2, noise=0.5)
    p.bias = p.bias + np.linspace(-1.0, 1.0, g.num_edges) * case["bias_scale"]
    p.tau, p.alpha, p.top_k = case["tau"], case["alpha"], case["top_k"]
    return p


def _run(be: Any, case: dict[str, Any], body: Callable[[Router], dict[str, Any]]) -> tuple[str, Any]:
    """("ok", numpy outputs) or ("error", (type, message))."""
    try:
        router = Router(case["graph"], _params(case), be)
        out = body(router)
        return "ok", {k: (be.to_numpy(v) if be.is_array(v) else v) for k, v in out.items()}
    except EnergeticError as exc:
        return "error", (type(exc), str(exc))


def _forward_body(case: dict[str, Any]) -> Callable[[Router], dict[str, Any]]:
    def body(r: Router) -> dict[str, Any]:
        out = r.forward(case["energies"], active=case["active"], steps=case["steps"],
                        retain_sinks=case["retain_sinks"], keep_history=case["keep_history"])
        res = {"pi": out.edge_pi, "next": out.next_energies, "metrics": np.array(list(out.metrics.values()))}
        if case["keep_history"]:
            grads = r.backward(out, case["grad_next"])
            res.update(gq=grads.q, gk=grads.k, gbias=grads.bias, genergies=grads.energies)
        return res

    return body


def _train_body(case: dict[str, Any]) -> Callable[[Router], dict[str, Any]]:
    def body(r: Router) -> dict[str, Any]:
        opt = AdamW(r, lr=1e-3, max_grad_norm=1.0)
        res = r.train_step(case["energies"], case["target"], opt, loss=case["loss"], mask=case["mask"],
                           active=case["active"], steps=case["steps"], retain_sinks=case["retain_sinks"],
                           eps=case["eps"])
        st_ = opt.state()
        p = r.params()
        return {"loss": np.array([res.loss]), "skipped": res.skipped, "t": st_["t"],
                "q": p.q, "k": p.k, "bias": p.bias, "m": st_["m"]["bias"], "v": st_["v"]["bias"]}

    return body


def _check_outcome(case: dict[str, Any], got: tuple[str, Any], ref: tuple[str, Any]) -> bool:
    """Check an error against the refused argument of ``case``; True when both returned."""
    bad = case["bad"]
    if bad == "grad_next" and not case["keep_history"]:
        bad = None  # no backward: grad_next is never used
    if bad is None:
        assert got[0] == ref[0] == "ok", f"accepted arguments refused: NumPy {ref}, this backend {got}"
        return True
    assert got[0] == "error", f"{bad} = {case[bad]!r} was accepted"
    exc_type, msg = got[1]
    assert issubclass(exc_type, EnergeticError)
    name = {"tau": "params.tau", "alpha": "params.alpha", "top_k": "params.top_k", "bias_scale": "params.bias"}
    assert msg.startswith(name.get(bad, bad)), f"refused {bad}, but the message does not name it: {msg!r}"
    assert len(msg) < 600, f"message too long: {len(msg)} characters"
    assert ref == got, f"NumPy gave {ref}, this backend {got}"
    return False


def _check_close(name: str, got: np.ndarray, ref: np.ndarray, atol_extra: float = 0.0) -> None:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, name
    fin = np.isfinite(ref)
    assert np.array_equal(np.isfinite(got), fin), f"{name}: non-finite at other places than NumPy's"
    if fin.any():
        scale = max(1.0, float(np.abs(ref[fin]).max()))
        err = float(np.abs(got[fin] - ref[fin]).max())
        assert err <= 1e-5 * scale + atol_extra, f"{name}: max|err| = {err:.3e} (scale {scale:.3e})"


def _still_usable(be: Any) -> None:
    g = GRAPHS[1]
    p = RouterParams.init(g, 3, seed=4)
    e = np.random.default_rng(1).random((2, g.num_nodes)).astype(np.float32)
    ref = Router(g, p, NP).forward(e, steps=2).next_energies
    got = be.to_numpy(Router(g, p, be).forward(e, steps=2).next_energies)
    _check_close("forward after the example", got, ref)


@settings(max_examples=25)
@given(case=calls(train=False))
def test_fuzz_forward_backward(backend, case):
    with np.errstate(all="ignore"):
        ref = _run(NP, case, _forward_body(case))
        got = ref if backend is NP else _run(backend, case, _forward_body(case))
    if _check_outcome(case, got, ref):
        for k, v in ref[1].items():
            _check_close(k, got[1][k], v)
        assert np.isfinite(got[1]["pi"]).all()  # probabilities are always finite
    _still_usable(backend)


@settings(max_examples=25)
@given(case=calls(train=True))
def test_fuzz_train_step(backend, case):
    with np.errstate(all="ignore"):
        ref = _run(NP, case, _train_body(case))
        got = ref if backend is NP else _run(backend, case, _train_body(case))
    if _check_outcome(case, got, ref):
        g, r = got[1], ref[1]
        for name in ("q", "k", "bias", "m", "v"):
            assert np.isfinite(g[name]).all(), f"{name} holds a non-finite value after a train step"
        assert g["skipped"] == r["skipped"] and g["t"] == r["t"] == (0 if r["skipped"] else 1)
        _check_close("loss", g["loss"], r["loss"])
        # one AdamW step moves each element by at most ~lr (its direction may differ where
        # a gradient component is float32 rounding noise): 2 lr apart at most
        for name in ("q", "k", "bias"):
            _check_close(name, g[name], r[name], atol_extra=2.01e-3)
    _still_usable(backend)


@pytest.mark.parametrize("value", [1e39, -1e39, np.nan, np.inf])
def test_fuzz_examples_of_refused_values_name_their_argument(backend, value):
    """The fuzz's refused extremes, once each as explicit examples (not left to chance)."""
    g = GRAPHS[0]
    r = Router(g, RouterParams.init(g, 3, seed=2), backend)
    bad = np.full((2, g.num_nodes), value)
    for call, name in ((lambda: r.forward(bad), "energies"),
                       (lambda: r.train_step(np.ones((2, g.num_nodes)), bad, AdamW(r)), "target"),
                       (lambda: r.backward(r.forward(np.ones((2, g.num_nodes))), bad), "grad_next")):
        with pytest.raises(EnergeticError, match=rf"^{name} must be finite"):
            call()
    _still_usable(backend)
