"""Checkpoints: round-trip, versioning, corruption, truncation, wrong graph, atomic writes."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest

import energetic_wgpu as ew
from energetic_wgpu.checkpoint import VERSION, find_checkpoint, load_checkpoint, save_checkpoint
from energetic_wgpu.errors import CheckpointError


@pytest.fixture(scope="module")
def graph():
    return ew.build_lattice(ew.GraphConfig(layers=3, nodes_per_layer=32, local_neighbors=4, jump_neighbors=1))


def _trained(graph, backend="numpy"):
    router = ew.Router(graph, ew.RouterParams.init(graph, dim=4, top_k=2, tau=0.8), backend)
    opt = ew.AdamW(router, lr=0.05, betas=(0.8, 0.95), weight_decay=0.01, max_grad_norm=1.0)
    rng = np.random.default_rng(0)
    for _ in range(3):
        e = rng.random((5, graph.num_nodes), dtype=np.float32)
        router.train_step(e, np.zeros_like(e), opt)
    return router, opt


def _save(path, graph, router, opt, version=VERSION, data_state=None):
    state = opt.state()
    state.update(lr=opt.lr, betas=list(opt.betas))
    return save_checkpoint(
        path, step=3, params=router.params(), optimizer_state=state, graph=graph,
        data_state=data_state if data_state is not None else {"kind": "arrays", "epoch": 1, "pos": 4},
        config={"router": {"top_k": 2}}, version=version,
    )


def test_round_trip_bit_identical_forward(tmp_path, graph, backend):
    router, opt = _trained(graph, backend)
    p = _save(tmp_path / "c.npz", graph, router, opt)
    ck = load_checkpoint(p, graph)
    assert ck.step == 3 and ck.version == VERSION and ck.config == {"router": {"top_k": 2}}
    assert ck.data_state == {"kind": "arrays", "epoch": 1, "pos": 4}
    assert ck.optimizer["t"] == 3 and ck.optimizer["betas"] == [0.8, 0.95]
    assert (ck.params.tau, ck.params.top_k) == (0.8, 2)
    ref = router.params()
    for n in ("q", "k", "bias"):
        assert np.array_equal(getattr(ck.params, n), getattr(ref, n))
    restored = ew.Router(graph, ck.params, backend)
    opt2 = ew.AdamW(restored, lr=0.05)
    opt2.load_state(ck.optimizer)
    for n in ("q", "k", "bias"):
        assert np.array_equal(opt2.state()["m"][n], opt.state()["m"][n])
    e = np.random.default_rng(5).random((2, graph.num_nodes), dtype=np.float32)
    a = ew.to_numpy(router.forward(e).next_energies)
    b = ew.to_numpy(restored.forward(e).next_energies)
    assert a.tobytes() == b.tobytes()


def test_header_is_versioned_json(tmp_path, graph):
    router, opt = _trained(graph)
    p = _save(tmp_path / "c.npz", graph, router, opt)
    with np.load(p) as z:
        header = json.loads(bytes(z["header"]).decode())
    assert header["format"] == "energetic_wgpu.checkpoint" and header["version"] == 2
    assert header["graph"]["fingerprint"] == graph.fingerprint and len(header["sha256"]) == 64


def test_atomic_write_leaves_no_temp_files(tmp_path, graph):
    router, opt = _trained(graph)
    _save(tmp_path / "checkpoint.npz", graph, router, opt)
    _save(tmp_path / "checkpoint.npz", graph, router, opt)  # overwrite in place
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.npz"]
    assert find_checkpoint(tmp_path) == tmp_path / "checkpoint.npz"
    assert find_checkpoint(tmp_path / "nothing") is None


def test_corrupt_bytes(tmp_path, graph):
    router, opt = _trained(graph)
    p = _save(tmp_path / "c.npz", graph, router, opt)
    data = bytearray(p.read_bytes())
    for offset in (len(data) // 3, len(data) // 2):  # inside the arrays' data
        bad = bytearray(data)
        bad[offset] ^= 0xFF
        p.write_bytes(bytes(bad))
        with pytest.raises(CheckpointError, match="corrupt"):
            load_checkpoint(p)
    # anywhere else: a CheckpointError, or (a byte zip ignores, e.g. a timestamp) the exact content
    ref = router.params()
    for offset in range(0, len(data), 61):
        bad = bytearray(data)
        bad[offset] ^= 0xFF
        p.write_bytes(bytes(bad))
        try:
            ck = load_checkpoint(p)
        except CheckpointError:
            continue
        assert all(np.array_equal(getattr(ck.params, n), getattr(ref, n)) for n in ("q", "k", "bias"))


def test_checksum_catches_consistent_tampering(tmp_path, graph):
    """A file rewritten with a valid zip but changed content fails the SHA-256 check."""
    router, opt = _trained(graph)
    p = _save(tmp_path / "c.npz", graph, router, opt)
    with np.load(p) as z:
        arrays = {n: z[n] for n in z.files}
    arrays["params/bias"] = arrays["params/bias"] + 1
    np.savez(p, **arrays)
    with pytest.raises(CheckpointError, match="SHA-256 checksum does not match"):
        load_checkpoint(p)


def test_truncated(tmp_path, graph):
    router, opt = _trained(graph)
    p = _save(tmp_path / "c.npz", graph, router, opt)
    data = p.read_bytes()
    for keep in (0, 10, len(data) // 2, len(data) - 10):
        p.write_bytes(data[:keep])
        with pytest.raises(CheckpointError, match="corrupt or truncated"):
            load_checkpoint(p)


def test_not_a_checkpoint_and_missing(tmp_path):
    p = tmp_path / "x.npz"
    np.savez(p, a=np.zeros(3))
    with pytest.raises(CheckpointError, match="not an energetic_wgpu checkpoint"):
        load_checkpoint(p)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.npz")


def test_wrong_graph(tmp_path, graph):
    router, opt = _trained(graph)
    p = _save(tmp_path / "c.npz", graph, router, opt)
    other = ew.build_lattice(ew.GraphConfig(layers=3, nodes_per_layer=32, local_neighbors=4, jump_neighbors=1, seed=9))
    with pytest.raises(CheckpointError, match="written for another graph .*fingerprint"):
        load_checkpoint(p, other)
    load_checkpoint(p)  # without a graph to check against it loads


def _rewrite_header(p, **changes):
    with np.load(p) as z:
        arrays = {n: z[n] for n in z.files}
    header = json.loads(bytes(arrays.pop("header")).decode())
    header.update(changes)
    from energetic_wgpu.checkpoint import _digest

    header["sha256"] = _digest(header, arrays)
    np.savez(p, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), **arrays)


def test_future_version_refused(tmp_path, graph):
    router, opt = _trained(graph)
    p = _save(tmp_path / "c.npz", graph, router, opt)
    _rewrite_header(p, version=99)
    with pytest.raises(CheckpointError, match="format version 99, newer than this energetic_wgpu reads"):
        load_checkpoint(p)
    _rewrite_header(p, version=0)
    with pytest.raises(CheckpointError, match="version 0, which is no longer supported"):
        load_checkpoint(p)


def test_version_1_migrates_with_warning(tmp_path, graph):
    router, opt = _trained(graph)
    p = _save(tmp_path / "c.npz", graph, router, opt, version=1)
    with np.load(p) as z:
        assert "data_state" not in json.loads(bytes(z["header"]).decode())
    with pytest.warns(RuntimeWarning, match="version 1 has no data/RNG state; migrated"):
        ck = load_checkpoint(p, graph)
    assert ck.version == 1 and ck.data_state is None and ck.step == 3
    assert np.array_equal(ck.params.q, router.params().q)


def test_bad_zip_member(tmp_path, graph):
    p = tmp_path / "c.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("header.npy", b"garbage")
    with pytest.raises(CheckpointError):
        load_checkpoint(p)
