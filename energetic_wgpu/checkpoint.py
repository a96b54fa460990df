"""Checkpoints: parameters, optimizer state, step, data/RNG state, config and graph fingerprint.

Format (version 2): one ``.npz`` file (a zip written with numpy, no pickle, members stored
uncompressed) holding the float32/float64 arrays ``params/q`` [N, d], ``params/k`` [N, d],
``params/bias`` [E], ``opt/m/<name>`` and ``opt/v/<name>`` (the shapes of the parameter
``<name>``) and a ``header`` (UTF-8 JSON as a uint8 array of at most ``MAX_HEADER_BYTES``)::

    {"format": "energetic_wgpu.checkpoint", "version": 2, "step": ..., "graph": {...},
     "params": {"tau", "alpha", "top_k"}, "optimizer": {"t", "lr", "betas", ...},
     "data_state": {...}, "config": {...}, "backend": "...", "created": ..., "sha256": "..."}

``sha256`` covers the header (without itself) and every array's name, dtype, shape and
bytes, so a flipped byte is detected even where the zip container would not notice.
Version 1 is the same without ``data_state`` (no RNG state): it loads with a migration
(the data order restarts from its seed, with a warning).

Loading never trusts the file: the header's structure and types are checked against one
schema (unknown keys are accepted), and each array's declared dtype and shape (its ``.npy``
header) against that schema *before* any array data is read, so a file declaring a huge array
is refused without allocating it; unknown or compressed members, non-finite parameters or
moments and negative second moments are refused. Every failure is a :class:`CheckpointError`
naming the file and the field.

Files are written atomically: a temporary file ``.<name>.<8 characters>.tmp`` in the target
folder (created with the permissions of any other output, ``0o666 & ~umask``, and locked with
``flock`` while it is written), ``fsync``, then ``os.replace``; a crash never leaves a
half-written checkpoint under the final name. A temporary file left by a process killed
mid-save is removed by the next save in that folder, or by :func:`clean_stale_temp_files`.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import secrets
import struct
import time
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Mapping

import numpy as np

from .errors import CheckpointError, InvalidArgumentError
from .graph import Graph
from .router import RouterParams
from .shortrepr import short_repr

try:  # POSIX: temporary files are locked while written, so a cleaner never removes a live one
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "find_checkpoint",
    "clean_stale_temp_files",
    "FORMAT",
    "VERSION",
    "MAX_HEADER_BYTES",
]

FORMAT = "energetic_wgpu.checkpoint"
#: the version this library writes
VERSION = 2
#: versions it reads (1 through a migration)
READABLE = (1, 2)
PARAM_NAMES = ("q", "k", "bias")
#: every array member of a checkpoint (besides "header")
ARRAY_NAMES = tuple(f"{kind}/{n}" for kind in ("params", "opt/m", "opt/v") for n in PARAM_NAMES)
#: the largest header (JSON bytes) a checkpoint may hold
MAX_HEADER_BYTES = 1 << 20
#: the largest step count, counter or size a header may hold (exact in float64)
MAX_COUNT = 2**53


@dataclass
class Checkpoint:
    """The content of a checkpoint file.

    Attributes:
        step: number of completed training steps.
        params: the router's parameters (numpy).
        optimizer: {"t", "m": {name: array}, "v": {name: array}, and the hyper-parameters}.
        data_state: the data source's state (None for a migrated version-1 file).
        config: the run's configuration as a dict (or None).
        graph_fingerprint, num_nodes, num_edges: the graph it was trained on.
        version: the format version of the file it came from.
        extra: any other JSON-serializable fields (backend, created, ...).
    """

    step: int
    params: RouterParams
    optimizer: dict[str, Any]
    data_state: dict[str, Any] | None
    config: dict[str, Any] | None
    graph_fingerprint: str
    num_nodes: int
    num_edges: int
    version: int = VERSION
    extra: dict[str, Any] = field(default_factory=dict)


def _digest(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({k: v for k, v in header.items() if k != "sha256"}, sort_keys=True).encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode() + b"\0" + a.dtype.str.encode() + b"\0" + repr(a.shape).encode() + b"\0")
        h.update(a.tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------ the schema
class _Invalid(Exception):
    """A field has the wrong type or value; becomes a CheckpointError naming the file."""


def _got(value: Any) -> str:
    """``got <a short repr> (<type>)``: never more than 80 characters of the value."""
    return f"got {short_repr(value, 80)} ({type(value).__name__})"


Check = Callable[[Any, str], None]
#: an array's (shape, dtype), as given or as declared in its .npy header
_Declared = tuple[tuple[int, ...], np.dtype]


def _integer(v: Any, name: str) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_COUNT:
        raise _Invalid(f"header field {name!r} must be an integer in [0, 2**53], {_got(v)}")


def _string(v: Any, name: str) -> None:
    if not isinstance(v, str):
        raise _Invalid(f"header field {name!r} must be a string, {_got(v)}")


def _number(low: float | None = None, *, positive: bool = False, below: float | None = None) -> Check:
    """A finite JSON number (not a bool), >= low / > 0 / < below when given."""
    bounds = [">= %g" % low] if low is not None else []
    bounds += ["> 0"] if positive else []
    bounds += ["< %g" % below] if below is not None else []
    what = "a finite number" + (" " + " and ".join(bounds) if bounds else "")

    def check(v: Any, name: str) -> None:
        ok = not isinstance(v, bool) and isinstance(v, (int, float)) and abs(v) <= 1e308 and math.isfinite(v)
        ok = ok and (low is None or v >= low) and (not positive or v > 0) and (below is None or v < below)
        if not ok:
            raise _Invalid(f"header field {name!r} must be {what}, {_got(v)}")

    return check


def _nullable(check: Check) -> Check:
    def nullable(v: Any, name: str) -> None:
        if v is not None:
            check(v, name)

    return nullable


def _pair(check: Check) -> Check:
    def pair(v: Any, name: str) -> None:
        if not isinstance(v, list) or len(v) != 2:
            raise _Invalid(f"header field {name!r} must be a list of 2 numbers, {_got(v)}")
        for i, item in enumerate(v):
            check(item, f"{name}[{i}]")

    return pair


def _object(fields: Mapping[str, Check], required: Collection[str] = ()) -> Check:
    """A JSON object whose known ``fields`` have the given types; other keys are accepted."""

    def obj(v: Any, name: str) -> None:
        if not isinstance(v, dict):
            raise _Invalid(f"{'header field %r' % name if name else 'the header'} must be a JSON object, {_got(v)}")
        for key, check in fields.items():
            path = f"{name}.{key}" if name else key
            if key in v:
                check(v[key], path)
            elif key in required:
                raise _Invalid(f"header field {path!r} is missing")

    return obj


_SCHEDULE_OBJECT = _object(
    {
        "name": _string,
        "lr": _number(0),
        "min_lr": _number(0),
        "gamma": _number(0),
        "total_steps": _nullable(_integer),
        "step_size": _nullable(_integer),
        "warmup_steps": _nullable(_integer),
    }
)


def _schedule(v: Any, name: str) -> None:
    """The resolved lr schedule (a flat object); a string (a description) in older files."""
    if v is not None and not isinstance(v, str):
        _SCHEDULE_OBJECT(v, name)


_SECTIONS = ("graph", "router", "optimizer", "train", "backend")
#: the header schema: ``_HEADER(header, "")`` raises _Invalid naming the first bad field. Known
#: fields are type- and range-checked; unknown keys (extra counters, new config keys) are kept.
_HEADER = _object(
    {
        "step": _integer,
        "graph": _object(
            {"fingerprint": _string, "num_nodes": _integer, "num_edges": _integer},
            required=("fingerprint", "num_nodes", "num_edges"),
        ),
        "params": _object(
            {"tau": _number(positive=True), "alpha": _number(), "top_k": _integer},
            required=("tau", "alpha", "top_k"),
        ),
        "optimizer": _object(
            {
                "t": _integer,
                "lr": _number(0),
                "betas": _pair(_number(0, below=1)),
                "eps": _number(positive=True),
                "weight_decay": _number(0),
                "max_grad_norm": _nullable(_number(positive=True)),
                "schedule": _schedule,
            },
            required=("t",),
        ),
        "data_state": _nullable(
            _object({"kind": _string, "epoch": _integer, "pos": _integer, "seed": _integer, "rng": _object({})})
        ),
        "config": _nullable(_object({s: _object({}) for s in _SECTIONS})),
        "sha256": _string,
        "created": _number(),
    },
    required=("step", "graph", "params", "optimizer", "sha256"),
)


def _check_names(names: Collection[str]) -> None:
    unknown = sorted(set(names) - set(ARRAY_NAMES))
    if unknown:
        raise _Invalid(
            f"unknown member(s) {short_repr(unknown)}; a checkpoint holds only 'header' and {list(ARRAY_NAMES)}"
        )
    missing = [n for n in ARRAY_NAMES if n not in names]
    if missing:
        raise _Invalid(f"missing arrays {missing}")


def _check_arrays(declared: Mapping[str, _Declared], header: dict[str, Any]) -> None:
    """Check the arrays' names, dtypes and shapes (given, or declared in their .npy headers)
    against a validated header: q, k [num_nodes, d >= 1], bias [num_edges], each moment the
    shape of its parameter, all float32 or float64."""
    _check_names(declared)
    for name, (_, dtype) in declared.items():
        if dtype.kind != "f" or dtype.itemsize not in (4, 8):
            raise _Invalid(f"array {name!r} must be float32 or float64, got dtype {dtype}")
    q_shape = declared["params/q"][0]
    n, e = header["graph"]["num_nodes"], header["graph"]["num_edges"]
    if len(q_shape) != 2 or q_shape[0] != n or q_shape[1] < 1:
        raise _Invalid(f"array 'params/q' must have shape (graph.num_nodes={n}, d >= 1), got {q_shape}")
    want = {"q": q_shape, "k": q_shape, "bias": (e,)}
    for name, (shape, _) in declared.items():
        expected = want[name.rsplit("/", 1)[1]]
        if shape != expected:
            raise _Invalid(f"array {name!r} must have shape {expected}, got {shape}")


def _check_values(arrays: Mapping[str, np.ndarray]) -> None:
    """Parameters and moments are finite; second moments are never negative."""
    for name in ARRAY_NAMES:
        finite = np.isfinite(arrays[name])
        if not finite.all():
            raise _Invalid(f"array {name!r} holds {int(finite.size - finite.sum())} non-finite value(s)")
        if name.startswith("opt/v/") and (arrays[name] < 0).any():
            raise _Invalid(f"array {name!r} (a second moment) holds negative value(s)")


# ---------------------------------------------------------------- the container
#: what a damaged zip or .npy header can raise while it is parsed (zipfile, zlib, numpy.lib.format)
_CONTAINER_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    EOFError,
    OSError,
    ValueError,
    KeyError,
    IndexError,
    OverflowError,
    NotImplementedError,
    struct.error,
    zlib.error,
)


def _members(zf: zipfile.ZipFile, p: Path) -> dict[str, zipfile.ZipInfo]:
    """The zip entries by array name ("params/q" for the entry "params/q.npy")."""
    members: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        name = info.filename.removesuffix(".npy")
        if name in members:
            raise CheckpointError(f"{p} is corrupt: member {short_repr(name)} appears twice")
        members[name] = info
    return members


def _declared(zf: zipfile.ZipFile, info: zipfile.ZipInfo, p: Path, size: int) -> _Declared:
    """A member's shape and dtype from its .npy header, reading none of its data; the data it
    declares must be exactly what the (uncompressed) entry holds, so reading it later can
    never allocate more than the file's size."""
    name = info.filename
    if info.flag_bits & 0x1:
        raise CheckpointError(f"{p}: member {name!r} is encrypted; checkpoints are not")
    if info.compress_type != zipfile.ZIP_STORED:
        raise CheckpointError(
            f"{p}: member {name!r} is compressed; checkpoint arrays are stored uncompressed "
            "(as save_checkpoint writes them)"
        )
    if info.compress_size != info.file_size or info.header_offset + info.file_size > size:
        raise CheckpointError(f"{p} ({size} bytes) is corrupt or truncated: member {name!r} does not fit in the file")
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise CheckpointError(f"{p}: member {name!r} uses .npy format {version}; checkpoints use 1.0 or 2.0")
        offset = f.tell()
    if dtype.hasobject:
        raise CheckpointError(f"{p}: member {name!r} holds Python objects; checkpoints hold only numbers (no pickle)")
    nbytes = math.prod(shape) * dtype.itemsize
    if offset + nbytes != info.file_size:
        raise CheckpointError(
            f"{p} is corrupt or truncated: member {name!r} declares {short_repr(shape)} {short_repr(str(dtype))} "
            f"({nbytes} bytes of data) but holds {info.file_size - offset} bytes"
        )
    return tuple(shape), dtype


def _read_array(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """A member's array (call only after :func:`_declared` accepted it; the CRC is checked)."""
    with zf.open(info) as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def _read_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, declared: _Declared, p: Path) -> Any:
    shape, dtype = declared
    if dtype != np.uint8 or len(shape) != 1 or shape[0] > MAX_HEADER_BYTES:
        raise CheckpointError(
            f"{p} is not a valid checkpoint: its header must be a uint8 array of at most {MAX_HEADER_BYTES} bytes, "
            f"got {dtype} {short_repr(shape)}"
        )
    raw = _read_array(zf, info)
    try:
        return json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise CheckpointError(f"{p} is corrupt: its header is not valid JSON ({str(exc)[:200]})") from None


def _check_format(header: Any, p: Path) -> int:
    """The format version of a decoded header (refused: not a checkpoint, unreadable version)."""
    if not isinstance(header, dict):
        raise CheckpointError(
            f"{p} is not an energetic_wgpu checkpoint: its header must be a JSON object, {_got(header)}"
        )
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{p} is not an energetic_wgpu checkpoint (format {short_repr(header.get('format'))})")
    version = header.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"{p} has no valid format version ({_got(version)})")
    if version > VERSION:
        raise CheckpointError(
            f"{p} has format version {short_repr(version)}, newer than this energetic_wgpu reads (versions "
            f"{READABLE[0]}..{VERSION}); upgrade energetic_wgpu to load it"
        )
    if version not in READABLE:
        raise CheckpointError(
            f"{p} has format version {short_repr(version)}, which is no longer supported (reads {READABLE})"
        )
    return version


# ----------------------------------------------------------------- temp files
#: the atomic writer's temporary names: ".<target name>.<8 characters>.tmp"
_TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")
_OPEN_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)


def _lock(fd: int, blocking: bool) -> bool:
    """Take an exclusive flock on ``fd``; False when another process holds it."""
    if fcntl is None:  # pragma: no cover - Windows: an open file cannot be removed anyway
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # a file system without locks: a writer goes on, a cleaner keeps the file
        return blocking
    return True


def _still_named(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the open file ``fd`` (not removed or replaced)."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False))
    except FileNotFoundError:
        return False


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new, locked temporary file next to ``path`` with mode ``0o666 & ~umask`` (like every
    other output; ``tempfile.mkstemp`` would make it 0600)."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, _OPEN_NEW, 0o666)
        except FileExistsError:
            continue
        _lock(fd, blocking=True)
        if _still_named(fd, tmp):
            return fd, tmp
        os.close(fd)  # a cleaner removed it between the open and the lock: take another name
    raise CheckpointError(f"cannot create a temporary file for {path} in {path.parent}")


def clean_stale_temp_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files that a save killed mid-write left in ``folder``
    (``.<name>.<8 characters>.tmp``). A file that a save in progress holds (it is locked) is
    kept. Returns the removed paths; a missing folder has none."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:  # missing, not a folder, not readable: nothing to clean
        return []
    removed = []
    for entry in entries:
        if not _TEMP_NAME.fullmatch(entry.name) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            if _lock(fd, blocking=False) and _still_named(fd, Path(entry.path)):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temp_files(path.parent)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:  # closing it releases the lock: only after the rename
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable (best effort; not supported everywhere)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


# ------------------------------------------------------------------ save / load
def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    step: int,
    params: RouterParams,
    optimizer_state: dict[str, Any],
    graph: Graph,
    data_state: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    version: int = VERSION,
) -> Path:
    """Write a checkpoint atomically and return its path.

    Args:
        params: the parameters: float32/float64 q, k [N, d], bias [E] of ``graph``.
        optimizer_state: ``AdamW.state()`` ({"t", "m", "v"}) plus optional hyper-parameters
            (any JSON-serializable keys besides "m" and "v" are kept).
        version: the format version to write (1 only for tests of the migration).

    Raises:
        CheckpointError: content the loader would refuse (a field of the wrong type, an array
            of the wrong shape, a non-finite parameter or moment); nothing is written then.
    """
    if version not in READABLE:
        raise CheckpointError(f"cannot write format version {version}; this library writes {READABLE}")
    out = Path(path)
    try:
        arrays = {f"params/{n}": np.ascontiguousarray(getattr(params, n)) for n in PARAM_NAMES}
        arrays.update({f"opt/{k}/{n}": np.ascontiguousarray(optimizer_state[k][n]) for k in "mv" for n in PARAM_NAMES})
    except (AttributeError, KeyError, TypeError) as exc:
        raise InvalidArgumentError(
            f"params must be RouterParams and optimizer_state an AdamW.state() dict with 'm' and 'v' holding "
            f"{PARAM_NAMES}: {type(exc).__name__}: {str(exc)[:200]}"
        ) from None
    opt_meta = {k: v for k, v in optimizer_state.items() if k not in ("m", "v")}
    header: dict[str, Any] = {
        "format": FORMAT,
        "version": version,
        "step": _jsonable(step),
        "graph": {"fingerprint": graph.fingerprint, "num_nodes": graph.num_nodes, "num_edges": graph.num_edges},
        "params": {"tau": float(params.tau), "alpha": float(params.alpha), "top_k": int(params.top_k)},
        "optimizer": _jsonable(opt_meta),
        "config": _jsonable(config),
        "created": time.time(),
        **_jsonable(extra or {}),
    }
    if version >= 2:
        header["data_state"] = _jsonable(data_state)
    try:
        header["sha256"] = _digest(header, arrays)
        blob = json.dumps(header).encode()
        _HEADER(header, "")
        _check_arrays({n: (a.shape, a.dtype) for n, a in arrays.items()}, header)
        _check_values(arrays)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot write checkpoint {out}: the header is not JSON ({str(exc)[:200]})") from None
    except _Invalid as exc:
        raise CheckpointError(f"cannot write checkpoint {out}: {exc}") from None
    if len(blob) > MAX_HEADER_BYTES:
        raise CheckpointError(f"cannot write checkpoint {out}: a {len(blob)}-byte header (at most {MAX_HEADER_BYTES})")
    buf = io.BytesIO()
    np.savez(buf, header=np.frombuffer(blob, dtype=np.uint8), **arrays)
    _atomic_write(out, buf.getvalue())
    return out


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def load_checkpoint(path: str | os.PathLike[str], graph: Graph | None = None) -> Checkpoint:
    """Read and verify a checkpoint.

    Nothing in the file is trusted: the header is checked against the schema and every
    array's declared dtype and shape against the header before any array data is read.

    Args:
        graph: when given, the checkpoint must have been written for this graph.

    Raises:
        CheckpointError: missing, corrupt or truncated file; not a checkpoint; a newer
            (unsupported) format version; a header field of the wrong type or value (the message
            names it); an array of the wrong dtype or shape, non-finite or an unknown member;
            a checksum mismatch; another graph.
    """
    if graph is not None and not isinstance(graph, Graph):
        raise InvalidArgumentError(f"graph must be a Graph or None, got {type(graph).__name__}")
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist or is not a file")
    size = p.stat().st_size
    try:
        with zipfile.ZipFile(p) as zf:
            members = _members(zf, p)
            if "header" not in members:
                raise CheckpointError(f"{p} is not an energetic_wgpu checkpoint (no header)")
            header = _read_header(zf, members["header"], _declared(zf, members["header"], p, size), p)
            version = _check_format(header, p)
            _HEADER(header, "")
            names = [n for n in members if n != "header"]
            _check_names(names)
            _check_arrays({n: _declared(zf, members[n], p, size) for n in names}, header)
            # only now, with every size known to match the schema and the file, read the data
            arrays = {n: _read_array(zf, members[n]) for n in names}
        if header["sha256"] != _digest(header, arrays):
            raise CheckpointError(f"{p} is corrupt: its SHA-256 checksum does not match the content")
        _check_values(arrays)
    except _Invalid as exc:
        raise CheckpointError(f"{p} is not a valid checkpoint: {exc}") from None
    except _CONTAINER_ERRORS as exc:
        raise CheckpointError(
            f"{p} ({size} bytes) is corrupt or truncated, not a readable checkpoint: "
            f"{type(exc).__name__}: {str(exc)[:200]}"
        ) from None
    g = header["graph"]
    if graph is not None and g["fingerprint"] != graph.fingerprint:
        raise CheckpointError(
            f"{p} was written for another graph ({g['num_nodes']} nodes, {g['num_edges']} edges, fingerprint "
            f"{g['fingerprint']}) than the current one ({graph.num_nodes} nodes, {graph.num_edges} edges, "
            f"fingerprint {graph.fingerprint}); check the graph section of the config"
        )
    data_state = header.get("data_state")
    if version == 1:
        warnings.warn(
            f"{p}: format version 1 has no data/RNG state; migrated to version {VERSION} "
            "(the data order restarts from its seed, so resuming is not bit-identical)",
            RuntimeWarning,
            stacklevel=2,
        )
        data_state = None
    hp = header["params"]
    params = RouterParams(
        arrays["params/q"], arrays["params/k"], arrays["params/bias"], hp["tau"], hp["alpha"], hp["top_k"]
    )
    opt = dict(header["optimizer"])
    opt["m"] = {n: arrays[f"opt/m/{n}"] for n in PARAM_NAMES}
    opt["v"] = {n: arrays[f"opt/v/{n}"] for n in PARAM_NAMES}
    known = {"format", "version", "step", "graph", "params", "optimizer", "config", "data_state", "sha256"}
    return Checkpoint(
        step=header["step"],
        params=params,
        optimizer=opt,
        data_state=data_state,
        config=header.get("config"),
        graph_fingerprint=g["fingerprint"],
        num_nodes=g["num_nodes"],
        num_edges=g["num_edges"],
        version=version,
        extra={k: v for k, v in header.items() if k not in known},
    )


def find_checkpoint(where: str | os.PathLike[str]) -> Path | None:
    """``where`` itself if it is a file, else ``where/checkpoint.npz`` if it exists, else None."""
    p = Path(where)
    if p.is_file():
        return p
    cand = p / "checkpoint.npz"
    return cand if cand.is_file() else None
