"""The real-data examples: each runs with reduced settings and its claims are asserted.

``examples/markov_text.py``: the trained character chain comes within 1 % of the closed-form
conditional entropy, and its 2- and 3-step transitions match the count-based chain's matrix
powers within 0.02. ``examples/digits.py``: the training cross-entropy comes within 1 % of the
optimum over all row-stochastic maps, held-out accuracy is above the floor, and NumPy and each
wgpu adapter agree within one accuracy point.

Each example runs on NumPy and on every wgpu adapter (``gpu_backend`` fixture: skipped with the
reason when none starts). A wgpu backend that cannot start (BackendUnavailable) skips with the
reason; a missing op (NotImplementedError) is a failure — every op exists on wgpu.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import pytest

from energetic_wgpu.errors import BackendUnavailable

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# reduced settings for the tests; the examples' claims are asserted unchanged
MARKOV_ARGS = ["--steps", "100", "--log-every", "100"]
DIGITS_ARGS = ["--steps", "60", "--log-every", "60"]


def load_example(name: str) -> ModuleType:
    path = EXAMPLES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"energetic_example_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_on_gpu(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run an example on a wgpu backend; a backend that cannot start skips with the reason."""
    try:
        return fn()
    except BackendUnavailable as exc:
        pytest.skip(f"wgpu backend unavailable: {exc}")


# ----------------------------------------------------------------- markov_text
@pytest.fixture(scope="module")
def markov() -> ModuleType:
    return load_example("markov_text")


def check_markov(res: dict[str, Any]) -> None:
    assert res["nodes"] == 48
    assert 0 < res["optimum"] < res["cross_entropy"] + 1e-6
    assert res["gap"] < 0.01, res
    assert res["nstep_err"][2] < 0.02 and res["nstep_err"][3] < 0.02, res


def test_markov_text_numpy(markov: ModuleType) -> None:
    res = markov.main(["--backend", "numpy", *MARKOV_ARGS])
    check_markov(res)


def test_markov_text_wgpu(markov: ModuleType, gpu_backend: Any) -> None:
    res = run_on_gpu(lambda: markov.main(MARKOV_ARGS, backend=gpu_backend))
    check_markov(res)


def test_markov_text_corpus_is_deterministic(markov: ModuleType) -> None:
    ids_a, alpha_a = markov.build_corpus(48)
    ids_b, alpha_b = markov.build_corpus(48)
    assert alpha_a == alpha_b and len(alpha_a) == 48 and alpha_a[-1] == markov.OTHER
    assert (ids_a == ids_b).all() and len(ids_a) > 50_000


def test_markov_text_ce_identity(markov: ModuleType) -> None:
    """The batch formulation's loss (mean over R rows of -sum t log p, t = R C / T) equals the
    per-token cross-entropy, and the count-based chain attains the closed-form entropy."""
    import numpy as np

    from energetic_wgpu import losses

    ids, alphabet = markov.build_corpus(48)
    counts = markov.bigram_counts(ids, len(alphabet))
    rows = np.flatnonzero(counts.sum(axis=1) > 0)
    r, total = len(rows), counts.sum()
    p_star = counts[rows] / counts[rows].sum(axis=1, keepdims=True)
    target = r * counts[rows] / total
    loss, _ = losses.cross_entropy(p_star, target)
    assert loss == pytest.approx(markov.conditional_entropy(counts), rel=1e-9)
    per_token = -np.log(p_star[np.searchsorted(rows, ids), np.roll(ids, -1)]).mean()
    assert loss == pytest.approx(per_token, rel=1e-9)


def test_markov_text_script_runs() -> None:
    """The script runs as a program (from a checkout, no install needed) and exits 0."""
    env = dict(os.environ, ENERGETIC_BACKEND="numpy")
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "markov_text.py"), "--backend", "numpy", *MARKOV_ARGS],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "gap to the optimum" in proc.stdout


# ---------------------------------------------------------------------- digits
@pytest.fixture(scope="module")
def digits() -> ModuleType:
    pytest.importorskip("sklearn", reason="examples/digits.py needs scikit-learn")
    return load_example("digits")


@pytest.fixture(scope="module")
def digits_numpy(digits: ModuleType) -> dict[str, Any]:
    return digits.main(["--backend", "numpy", *DIGITS_ARGS])


def check_digits(res: dict[str, Any]) -> None:
    assert res["gap"] < 0.01, res
    assert res["test_accuracy"] >= 0.55, res
    assert res["energy_on_class_nodes"] > 0.99, res


def test_digits_numpy(digits_numpy: dict[str, Any]) -> None:
    check_digits(digits_numpy)


def test_digits_wgpu(digits: ModuleType, digits_numpy: dict[str, Any], gpu_backend: Any) -> None:
    res = run_on_gpu(lambda: digits.main(DIGITS_ARGS, backend=gpu_backend))
    check_digits(res)
    # NumPy and the GPU agree within one accuracy point
    assert abs(res["test_accuracy"] - digits_numpy["test_accuracy"]) <= 0.01 + 1e-9, (res, digits_numpy)


def test_digits_em_optimum_is_stochastic(digits: ModuleType) -> None:
    import numpy as np

    x_tr, y_tr, _, _ = digits.load_data()
    assert x_tr.shape == (1400, 64)
    w = digits.em_optimum(x_tr, y_tr, iters=50)
    assert (w >= 0).all() and np.allclose(w.sum(axis=1), 1.0)
