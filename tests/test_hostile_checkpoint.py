"""Hostile checkpoints: zip bombs, malformed or re-signed headers, bad arrays, byte flips,
temporary files left by a killed save, file permissions.

The digest is unkeyed, so an edited header can be re-signed (``_digest``): the structural
checks must hold on their own. Every failure must be a CheckpointError naming the field.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

import energetic_wgpu as ew
from energetic_wgpu import checkpoint as ckmod
from energetic_wgpu.checkpoint import (
    ARRAY_NAMES,
    MAX_HEADER_BYTES,
    _digest,
    clean_stale_temp_files,
    load_checkpoint,
    save_checkpoint,
)
from energetic_wgpu.errors import CheckpointError, InvalidArgumentError
from test_checkpoint import _trained

SCHEDULE = {"name": "cosine", "lr": 0.05, "total_steps": 200, "min_lr": 0.0, "step_size": 100, "gamma": 0.5,
            "warmup_steps": 10}


@pytest.fixture(scope="module")
def graph():
    return ew.build_lattice(ew.GraphConfig(layers=3, nodes_per_layer=16, local_neighbors=3, jump_neighbors=1))


@pytest.fixture(scope="module")
def trained(graph):
    """A router and AdamW after 3 steps (non-zero moments)."""
    return _trained(graph)


def _opt_state(opt, **extra):
    state = opt.state()
    state.update(lr=opt.lr, betas=list(opt.betas), eps=opt.eps, weight_decay=opt.weight_decay,
                 max_grad_norm=opt.max_grad_norm, schedule=dict(SCHEDULE), **extra)
    return state


def _save(path, graph, trained, **kw):
    router, opt = trained
    args = dict(step=3, params=router.params(), optimizer_state=_opt_state(opt), graph=graph,
                data_state={"kind": "arrays", "epoch": 1, "pos": 4, "rng": {"bit_generator": "PCG64"}},
                config={"router": {"top_k": 2}})
    args.update(kw)
    return save_checkpoint(path, **args)


@pytest.fixture
def ckpt(tmp_path, graph, trained):
    return _save(tmp_path / "checkpoint.npz", graph, trained)


def _read(p):
    """(header dict, {name: array}) of a checkpoint file."""
    with np.load(p) as z:
        arrays = {n: z[n] for n in z.files}
    return json.loads(arrays.pop("header").tobytes().decode()), arrays


def _write(p, header, arrays, *, sign=True):
    """Write ``header`` (a dict, re-signed; or raw bytes/any JSON value) and ``arrays``."""
    if sign:
        header["sha256"] = _digest(header, arrays)
    blob = header if isinstance(header, bytes) else json.dumps(header).encode()
    np.savez(p, header=np.frombuffer(blob, dtype=np.uint8), **arrays)


def _raw_members(p):
    """{entry name: .npy bytes} of a zip."""
    with zipfile.ZipFile(p) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def _write_zip(p, members, compress=()):
    with zipfile.ZipFile(p, "w") as z:
        for name, data in members.items():
            z.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED if name in compress else zipfile.ZIP_STORED)


def _npy_header(shape, descr="<f4"):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _load_measured(p):
    """Load ``p`` expecting a CheckpointError; returns (error text, seconds, peak traced bytes)."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(p)
        return str(info.value), time.perf_counter() - t0, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ------------------------------------------------------------------ zip bombs
GIB2 = (2**28, 2)  # float32: 2 GiB of data declared


def test_zip_bomb_deflated_member_declaring_2gib_is_refused_unread(ckpt):
    members = _raw_members(ckpt)
    members["params/q.npy"] = _npy_header(GIB2) + bytes(1 << 21)  # 2 MiB of zeros, deflates to ~2 KB
    _write_zip(ckpt, members, compress={"params/q.npy"})
    msg, seconds, peak = _load_measured(ckpt)
    assert "member 'params/q.npy' is compressed" in msg
    assert peak < 16 << 20 and seconds < 5, (peak, seconds)


def test_stored_member_declaring_2gib_with_truncated_data_is_refused_unread(ckpt):
    members = _raw_members(ckpt)
    members["opt/v/k.npy"] = _npy_header(GIB2) + bytes(4096)
    _write_zip(ckpt, members)
    msg, seconds, peak = _load_measured(ckpt)
    assert "member 'opt/v/k.npy' declares (268435456, 2)" in msg and "but holds 4096 bytes" in msg
    assert peak < 16 << 20 and seconds < 5, (peak, seconds)


def test_resigned_header_with_a_huge_graph_is_refused_unread(ckpt):
    """A header claiming 2**28 nodes, arrays declaring matching shapes, data absent."""
    header, arrays = _read(ckpt)
    header["graph"]["num_nodes"] = GIB2[0]
    _write(ckpt, header, arrays)
    members = _raw_members(ckpt)
    for name in ("params/q", "params/k", "opt/m/q", "opt/m/k", "opt/v/q", "opt/v/k"):
        members[name + ".npy"] = _npy_header(GIB2) + bytes(64)
    _write_zip(ckpt, members)
    msg, seconds, peak = _load_measured(ckpt)
    assert "declares (268435456, 2)" in msg and "but holds 64 bytes" in msg
    assert peak < 16 << 20 and seconds < 5, (peak, seconds)


def test_shapes_are_checked_before_any_array_data_is_read(ckpt, monkeypatch):
    header, arrays = _read(ckpt)
    arrays["opt/v/bias"] = np.zeros(arrays["opt/v/bias"].size + 1, np.float32)
    _write(ckpt, header, arrays)
    reads = []
    real = ckmod._read_array
    monkeypatch.setattr(ckmod, "_read_array", lambda zf, info: reads.append(info.filename) or real(zf, info))
    with pytest.raises(CheckpointError, match=r"array 'opt/v/bias' must have shape \(%d,\), got \(%d,\)"
                       % (arrays["opt/v/bias"].size - 1, arrays["opt/v/bias"].size)):
        load_checkpoint(ckpt)
    assert reads == ["header.npy"]


def test_header_member_size_type_and_pickle_are_bounded(ckpt):
    header, arrays = _read(ckpt)
    blob = json.dumps(header).encode()
    np.savez(ckpt, header=np.frombuffer(blob + b" " * (MAX_HEADER_BYTES + 1 - len(blob)), np.uint8), **arrays)
    with pytest.raises(CheckpointError, match=f"header must be a uint8 array of at most {MAX_HEADER_BYTES} bytes"):
        load_checkpoint(ckpt)
    np.savez(ckpt, header=np.frombuffer(blob, np.uint8).astype(np.float32), **arrays)
    with pytest.raises(CheckpointError, match="header must be a uint8 array .* got float32"):
        load_checkpoint(ckpt)
    _write(ckpt, header, arrays)
    members = _raw_members(ckpt)
    buf = io.BytesIO()
    np.save(buf, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    members["params/k.npy"] = buf.getvalue()
    _write_zip(ckpt, members)
    with pytest.raises(CheckpointError, match="member 'params/k.npy' holds Python objects.*no pickle"):
        load_checkpoint(ckpt)


def test_unknown_duplicate_missing_and_compressed_members(ckpt, tmp_path):
    header, arrays = _read(ckpt)
    _write(ckpt, header, {**arrays, "evil": np.zeros(3, np.float32)})
    with pytest.raises(CheckpointError, match=r"not a valid checkpoint: unknown member\(s\) \['evil'\]"):
        load_checkpoint(ckpt)
    _write(ckpt, header, {n: a for n, a in arrays.items() if n != "opt/v/bias"})
    with pytest.raises(CheckpointError, match=r"missing arrays \['opt/v/bias'\]"):
        load_checkpoint(ckpt)
    _write(ckpt, header, arrays)
    members = list(_raw_members(ckpt).items())
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(ckpt, "w") as z:
        for name, data in [*members, members[1]]:
            z.writestr(name, data)
    with pytest.raises(CheckpointError, match=f"member '{members[1][0][:-4]}' appears twice"):
        load_checkpoint(ckpt)
    np.savez_compressed(ckpt, header=np.frombuffer(json.dumps(header).encode(), np.uint8), **arrays)
    with pytest.raises(CheckpointError, match="member 'header.npy' is compressed; checkpoint arrays are stored"):
        load_checkpoint(ckpt)


# ----------------------------------------------------------- malformed headers
def _drop(path):
    def edit(h):
        *parents, last = path.split(".")
        for key in parents:
            h = h[key]
        del h[last]

    return edit


def _set(path, value):
    def edit(h):
        *parents, last = path.split(".")
        for key in parents:
            h = h[key]
        h[last] = value

    return edit


MALFORMED = [
    (_drop("graph"), "header field 'graph' is missing"),
    (_drop("params"), "header field 'params' is missing"),
    (_drop("step"), "header field 'step' is missing"),
    (_drop("optimizer"), "header field 'optimizer' is missing"),
    (_drop("optimizer.t"), "header field 'optimizer.t' is missing"),
    (_drop("graph.fingerprint"), "header field 'graph.fingerprint' is missing"),
    (_drop("params.tau"), "header field 'params.tau' is missing"),
    (_set("step", "abc"), r"header field 'step' must be an integer in \[0, 2\*\*53\], got 'abc' \(str\)"),
    (_set("step", -5), r"header field 'step' must be an integer in \[0, 2\*\*53\], got -5 \(int\)"),
    (_set("step", 1.5), r"header field 'step' must be an integer .* got 1.5 \(float\)"),
    (_set("step", True), r"header field 'step' must be an integer .* got True \(bool\)"),
    (_set("step", 2**60), r"header field 'step' must be an integer in \[0, 2\*\*53\]"),
    (_set("graph", [1]), r"header field 'graph' must be a JSON object, got \[1\] \(list\)"),
    (_set("graph.num_nodes", "48"), "header field 'graph.num_nodes' must be an integer"),
    (_set("graph.fingerprint", 7), "header field 'graph.fingerprint' must be a string, got 7"),
    (_set("params", "x"), "header field 'params' must be a JSON object"),
    (_set("params.tau", 0), "header field 'params.tau' must be a finite number > 0, got 0"),
    (_set("params.tau", "1"), "header field 'params.tau' must be a finite number > 0, got '1'"),
    (_set("params.tau", None), "header field 'params.tau' must be a finite number > 0, got None"),
    (_set("params.tau", float("nan")), "header field 'params.tau' must be a finite number > 0, got nan"),
    (_set("params.alpha", float("inf")), "header field 'params.alpha' must be a finite number, got inf"),
    (_set("params.alpha", 10**400), "header field 'params.alpha' must be a finite number"),
    (_set("params.top_k", -1), "header field 'params.top_k' must be an integer"),
    (_set("params.top_k", 2.0), "header field 'params.top_k' must be an integer"),
    (_set("optimizer", [1, 2]), "header field 'optimizer' must be a JSON object"),
    (_set("optimizer.t", -1), "header field 'optimizer.t' must be an integer"),
    (_set("optimizer.t", "3"), "header field 'optimizer.t' must be an integer"),
    (_set("optimizer.lr", "fast"), "header field 'optimizer.lr' must be a finite number >= 0"),
    (_set("optimizer.lr", -0.1), "header field 'optimizer.lr' must be a finite number >= 0"),
    (_set("optimizer.betas", [0.9]), "header field 'optimizer.betas' must be a list of 2 numbers"),
    (_set("optimizer.betas", "0.9,0.99"), "header field 'optimizer.betas' must be a list of 2 numbers"),
    (_set("optimizer.betas", [0.9, 1.0]), r"header field 'optimizer.betas\[1\]' must be a finite number >= 0 and < 1"),
    (_set("optimizer.eps", 0), "header field 'optimizer.eps' must be a finite number > 0"),
    (_set("optimizer.weight_decay", -1), "header field 'optimizer.weight_decay' must be a finite number >= 0"),
    (_set("optimizer.max_grad_norm", "1"), "header field 'optimizer.max_grad_norm' must be a finite number > 0"),
    (_set("optimizer.schedule", 5), "header field 'optimizer.schedule' must be a JSON object, got 5"),
    (_set("optimizer.schedule.name", 3), "header field 'optimizer.schedule.name' must be a string"),
    (_set("optimizer.schedule.total_steps", -1), "header field 'optimizer.schedule.total_steps' must be an integer"),
    (_set("optimizer.schedule.gamma", "x"), "header field 'optimizer.schedule.gamma' must be a finite number"),
    (_set("data_state", "x"), "header field 'data_state' must be a JSON object"),
    (_set("data_state.epoch", -1), "header field 'data_state.epoch' must be an integer"),
    (_set("data_state.pos", "4"), "header field 'data_state.pos' must be an integer"),
    (_set("data_state.kind", 3), "header field 'data_state.kind' must be a string"),
    (_set("data_state.rng", [1]), "header field 'data_state.rng' must be a JSON object"),
    (_set("config", 5), "header field 'config' must be a JSON object"),
    (_set("config.router", [1]), "header field 'config.router' must be a JSON object"),
    (_set("created", "yesterday"), "header field 'created' must be a finite number"),
]


@pytest.mark.parametrize("edit, message", MALFORMED, ids=[m[1][:60] for m in MALFORMED])
def test_malformed_resigned_header_names_the_field(ckpt, edit, message):
    header, arrays = _read(ckpt)
    edit(header)
    _write(ckpt, header, arrays)
    with pytest.raises(CheckpointError, match=f"{ckpt} is not a valid checkpoint: {message}"):
        load_checkpoint(ckpt)


@pytest.mark.parametrize("value", [[1, 2], "hello", 3, None])
def test_header_that_is_not_an_object(ckpt, value):
    _, arrays = _read(ckpt)
    _write(ckpt, json.dumps(value).encode(), arrays, sign=False)
    with pytest.raises(CheckpointError, match="not an energetic_wgpu checkpoint: its header must be a JSON object"):
        load_checkpoint(ckpt)


@pytest.mark.parametrize(
    "blob",
    [b"[" * 100_000 + b"]" * 100_000, b'{"step": ' + b"9" * 5000 + b"}", b"\xff\xfe", b'{"a": '],
    ids=["deep-nesting", "5000-digit-int", "not-utf8", "truncated"],
)
def test_header_that_is_not_json(ckpt, blob):
    _, arrays = _read(ckpt)
    _write(ckpt, blob, arrays, sign=False)
    with pytest.raises(CheckpointError, match="is corrupt: its header is not valid JSON"):
        load_checkpoint(ckpt)


def test_missing_checksum_and_bool_version(ckpt):
    header, arrays = _read(ckpt)
    header["sha256"] = _digest(header, arrays)
    _write(ckpt, {k: v for k, v in header.items() if k != "sha256"}, arrays, sign=False)
    with pytest.raises(CheckpointError, match="header field 'sha256' is missing"):
        load_checkpoint(ckpt)
    header["version"] = True
    _write(ckpt, header, arrays)
    with pytest.raises(CheckpointError, match=r"has no valid format version \(got True \(bool\)\)"):
        load_checkpoint(ckpt)


def test_unknown_optional_keys_and_a_schedule_object_are_kept(tmp_path, graph, trained):
    router, opt = trained
    p = _save(tmp_path / "c.npz", graph, trained, optimizer_state=_opt_state(opt, skipped=2, found_inf=0),
              data_state={"kind": "teacher", "seed": 5, "future": [1, 2]},
              config={"router": {"top_k": 2}, "extra_section": {"a": 1}, "train": {"new_key": "x"}},
              extra={"backend": "numpy (float32)", "library_version": "9.9"})
    ck = load_checkpoint(p, graph)
    assert ck.optimizer["schedule"] == SCHEDULE and (ck.optimizer["skipped"], ck.optimizer["found_inf"]) == (2, 0)
    assert ck.optimizer["t"] == 3 and ck.data_state == {"kind": "teacher", "seed": 5, "future": [1, 2]}
    assert ck.config["extra_section"] == {"a": 1} and ck.extra["library_version"] == "9.9"
    header, arrays = _read(p)
    header["optimizer"]["schedule"] = "CosineLR(lr=0.05, total_steps=200, min_lr=0.0)"  # older trainers: a string
    _write(p, header, arrays)
    assert load_checkpoint(p).optimizer["schedule"].startswith("CosineLR(")


# ----------------------------------------------------------------- bad arrays
@pytest.mark.parametrize(
    "name, change, message",
    [
        ("params/q", lambda a: np.where(np.arange(a.size).reshape(a.shape) == 3, np.nan, a), "holds 1 non-finite"),
        ("params/bias", lambda a: np.full_like(a, np.inf), "holds {} non-finite"),
        ("opt/m/k", lambda a: np.full_like(a, -np.inf), "holds {} non-finite"),
        ("opt/v/bias", lambda a: np.full_like(a, np.nan), "holds {} non-finite"),
        ("opt/v/q", lambda a: a - 1.0, r"\(a second moment\) holds negative value"),
        ("params/k", lambda a: a.astype(np.int32), "must be float32 or float64, got dtype int32"),
        ("params/k", lambda a: a.astype(np.complex64), "must be float32 or float64, got dtype complex64"),
        ("params/q", lambda a: a.ravel(), r"must have shape \(graph.num_nodes=48, d >= 1\)"),
        ("params/q", lambda a: a[:, :0], r"must have shape \(graph.num_nodes=48, d >= 1\)"),
        ("params/k", lambda a: a[:, :3], r"must have shape \(48, 4\), got \(48, 3\)"),
        ("opt/m/q", lambda a: a.T, r"must have shape \(48, 4\), got \(4, 48\)"),
        ("params/bias", lambda a: a[:-1], r"must have shape"),
    ],
)
def test_bad_arrays_name_the_array(ckpt, name, change, message):
    header, arrays = _read(ckpt)
    arrays[name] = change(arrays[name])
    _write(ckpt, header, arrays)
    with pytest.raises(CheckpointError, match=f"not a valid checkpoint: array '{name}'.*" + message.format(
            arrays[name].size)):
        load_checkpoint(ckpt)


def test_save_refuses_what_load_would_refuse(tmp_path, graph, trained):
    router, opt = trained
    p = tmp_path / "c.npz"
    bad = router.params()
    bad.q = bad.q.copy()
    bad.q[0, 0] = np.nan
    with pytest.raises(CheckpointError, match=r"cannot write checkpoint .*array 'params/q' holds 1 non-finite"):
        _save(p, graph, trained, params=bad)
    with pytest.raises(CheckpointError, match="cannot write checkpoint .*header field 'step' must be an integer"):
        _save(p, graph, trained, step=-1)
    with pytest.raises(CheckpointError, match="cannot write checkpoint .*the header is not JSON"):
        _save(p, graph, trained, extra={"x": object()})
    with pytest.raises(InvalidArgumentError, match="optimizer_state an AdamW.state"):
        _save(p, graph, trained, optimizer_state={"t": 1})
    assert not p.exists() and os.listdir(tmp_path) == []


# ----------------------------------------------------------------------- fuzz
def _same(a, b):
    for n in ("q", "k", "bias"):
        x, y = getattr(a.params, n), getattr(b.params, n)
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes()
        for k in "mv":
            assert a.optimizer[k][n].tobytes() == b.optimizer[k][n].tobytes()
    meta = lambda c: {k: v for k, v in c.optimizer.items() if k not in "mv"}  # noqa: E731
    assert (a.step, a.version, a.data_state, a.config, a.extra, meta(a)) == (b.step, b.version, b.data_state,
                                                                             b.config, b.extra, meta(b))
    assert (a.params.tau, a.params.alpha, a.params.top_k, a.graph_fingerprint) == (
        b.params.tau, b.params.alpha, b.params.top_k, b.graph_fingerprint)


def test_fuzz_flips_and_truncations_load_identically_or_raise_checkpoint_error(ckpt, graph):
    ref = load_checkpoint(ckpt, graph)
    data = ckpt.read_bytes()
    rng = np.random.default_rng(2024)
    cases = [("flip", int(i), int(x)) for i, x in zip(rng.integers(0, len(data), 300), rng.integers(1, 256, 300))]
    cases += [("truncate", int(i), 0) for i in rng.integers(0, len(data), 60)]
    header_end = data.index(b"}", data.index(b'"format"')) + 1  # the JSON header: flips there, one by one
    cases += [("flip", i, 0x20) for i in range(data.index(b'"format"') - 8, header_end, 7)]
    loaded = refused = 0
    for kind, pos, xor in cases:
        bad = bytearray(data[:pos] if kind == "truncate" else data)
        if kind == "flip":
            bad[pos] ^= xor
        ckpt.write_bytes(bytes(bad))
        try:
            ck = load_checkpoint(ckpt, graph)
        except CheckpointError:
            refused += 1
            continue
        except Exception as exc:  # noqa: BLE001 - the point: nothing else may escape
            pytest.fail(f"{kind} at byte {pos} (xor {xor:#x}) raised {type(exc).__name__}: {exc}")
        _same(ck, ref)
        loaded += 1
    assert refused > 300 and loaded + refused == len(cases), (loaded, refused)


# ------------------------------------------------------------- temp files, mode
def test_temp_file_of_a_killed_save_is_removed_by_the_next_save(tmp_path, graph, trained):
    pytest.importorskip("fcntl")
    script = textwrap.dedent(
        f"""
        import os, numpy as np, energetic_wgpu as ew
        from energetic_wgpu.checkpoint import save_checkpoint
        g = ew.build_lattice(ew.GraphConfig(layers=3, nodes_per_layer=16, local_neighbors=3, jump_neighbors=1))
        p = ew.RouterParams.init(g, dim=4)
        z = {{n: np.zeros_like(getattr(p, n)) for n in ("q", "k", "bias")}}
        os.fsync = lambda fd: os._exit(9)  # killed in the middle of the save
        save_checkpoint({str(tmp_path / "checkpoint.npz")!r}, step=1, params=p,
                        optimizer_state={{"t": 1, "m": z, "v": z}}, graph=g)
        """
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert res.returncode == 9, res.stderr
    (left,) = os.listdir(tmp_path)
    assert left.startswith(".checkpoint.npz.") and left.endswith(".tmp")
    _save(tmp_path / "checkpoint.npz", graph, trained)
    assert os.listdir(tmp_path) == ["checkpoint.npz"]


def test_clean_stale_temp_files_keeps_live_and_foreign_files(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    stale = [tmp_path / ".checkpoint.npz.ab_12xyz.tmp", tmp_path / ".other.npz.0123abcd.tmp"]
    live = tmp_path / ".checkpoint.npz.live1234.tmp"
    foreign = ["notes.tmp", ".hidden", "checkpoint.npz.abcd1234.tmp", ".x.npz.abc.tmp", ".x.npz.ABCD1234.tmp"]
    for f in [*stale, live, *(tmp_path / n for n in foreign)]:
        f.write_bytes(b"partial")
    (tmp_path / ".dir.npz.abcd1234.tmp").mkdir()
    (tmp_path / ".link.npz.abcd1234.tmp").symlink_to(tmp_path / "notes.tmp")
    with open(live, "rb") as held:  # a save in progress holds its temporary file locked
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        removed = clean_stale_temp_files(tmp_path)
    assert sorted(removed) == sorted(stale)
    assert sorted(os.listdir(tmp_path)) == sorted([live.name, *foreign, ".dir.npz.abcd1234.tmp",
                                                   ".link.npz.abcd1234.tmp"])
    assert clean_stale_temp_files(tmp_path) == [live]  # its writer is gone now
    assert clean_stale_temp_files(tmp_path / "missing") == []


def test_a_temp_file_removed_before_the_writer_locks_it_is_replaced(tmp_path, graph, trained, monkeypatch):
    """A cleaner may remove a new temp file between its creation and its lock: the writer
    notices and takes another name."""
    real, calls = ckmod._lock, []

    def racing_lock(fd, blocking):
        if blocking and not calls:
            (victim,) = [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
            os.unlink(tmp_path / victim)
        calls.append(blocking)
        return real(fd, blocking)

    monkeypatch.setattr(ckmod, "_lock", racing_lock)
    p = _save(tmp_path / "checkpoint.npz", graph, trained)
    assert calls == [True, True] and os.listdir(tmp_path) == ["checkpoint.npz"]
    assert load_checkpoint(p).step == 3


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_checkpoint_permissions_follow_the_umask_like_other_outputs(tmp_path, graph, trained, umask):
    if os.name != "posix":
        pytest.skip("POSIX file modes")
    old = os.umask(umask)
    try:
        p = _save(tmp_path / "checkpoint.npz", graph, trained)
        _save(p, graph, trained)  # and when it replaces an existing one
        (tmp_path / "config.yaml").write_text("x")
    finally:
        os.umask(old)
    assert oct(p.stat().st_mode & 0o777) == oct(0o666 & ~umask)
    assert p.stat().st_mode & 0o777 == (tmp_path / "config.yaml").stat().st_mode & 0o777



@pytest.mark.parametrize(
    "data_state, message",
    [
        ({"kind": "arrays", "epoch": 0, "pos": 0, "rng": {}}, "ValueError: state must be for a PCG64 RNG"),
        ({"kind": "arrays", "epoch": 0}, "KeyError: 'pos'"),
        ({"kind": "teacher", "seed": 1}, "InvalidArgumentError: cannot restore a 'teacher' data state into an Array"),
    ],
)
def test_trainer_resume_with_a_data_state_that_does_not_fit(tmp_path, data_state, message):
    from energetic_wgpu.config import load_config
    from energetic_wgpu.tasks import ArrayDataset
    from energetic_wgpu.trainer import Trainer

    cfg = load_config(overrides=["graph.layers=2", "graph.nodes_per_layer=8", "graph.local_neighbors=2",
                                 "graph.jump_neighbors=0", "router.dim=2", "train.steps=1", "backend.name=numpy"])
    n = ew.build_lattice(cfg.graph.to_graph_config()).num_nodes
    e = np.random.default_rng(0).random((4, n), dtype=np.float32)
    make = lambda: Trainer(cfg, data=ArrayDataset(e, e, batch_size=2), out_dir=tmp_path, progress=False)  # noqa: E731
    make().run()
    header, arrays = _read(tmp_path / "checkpoint.npz")
    header["data_state"] = data_state
    _write(tmp_path / "checkpoint.npz", header, arrays)
    with pytest.raises(CheckpointError, match="the checkpoint's data_state does not fit this data source: " + message):
        make().resume(tmp_path)
