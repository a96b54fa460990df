"""Checkpoints: parameters, optimizer state, step, data/RNG state, config and graph fingerprint.

Format (version 2): one ``.npz`` file (written with numpy, no pickle) holding the arrays
``params/q``, ``params/k``, ``params/bias``, ``opt/m/<name>``, ``opt/v/<name>`` and a
``header`` (UTF-8 JSON as uint8) with::

    {"format": "energetic_wgpu.checkpoint", "version": 2, "step": ..., "graph": {...},
     "params": {"tau", "alpha", "top_k"}, "optimizer": {"t", "lr", "betas", ...},
     "data_state": {...}, "config": {...}, "backend": "...", "created": ..., "sha256": "..."}

``sha256`` covers the header (without itself) and every array's name, dtype, shape and
bytes, so a flipped byte is detected even where the zip container would not notice.
Version 1 is the same without ``data_state`` (no RNG state): it loads with a migration
(the data order restarts from its seed, with a warning).

Files are written atomically: a temporary file in the target folder, ``fsync``, then
``os.replace``; a crash never leaves a half-written checkpoint under the final name.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CheckpointError
from .graph import Graph
from .router import RouterParams

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "FORMAT", "VERSION", "find_checkpoint"]

FORMAT = "energetic_wgpu.checkpoint"
#: the version this library writes
VERSION = 2
#: versions it reads (1 through a migration)
READABLE = (1, 2)
PARAM_NAMES = ("q", "k", "bias")


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


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
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
        optimizer_state: ``AdamW.state()`` ({"t", "m", "v"}) plus optional hyper-parameters
            (any JSON-serializable keys besides "m" and "v" are kept).
        version: the format version to write (1 only for tests of the migration).
    """
    if version not in READABLE:
        raise CheckpointError(f"cannot write format version {version}; this library writes {READABLE}")
    arrays: dict[str, np.ndarray] = {}
    for name in PARAM_NAMES:
        arrays[f"params/{name}"] = np.ascontiguousarray(getattr(params, name))
        arrays[f"opt/m/{name}"] = np.ascontiguousarray(optimizer_state["m"][name])
        arrays[f"opt/v/{name}"] = np.ascontiguousarray(optimizer_state["v"][name])
    opt_meta = {k: v for k, v in optimizer_state.items() if k not in ("m", "v")}
    header: dict[str, Any] = {
        "format": FORMAT,
        "version": version,
        "step": int(step),
        "graph": {"fingerprint": graph.fingerprint, "num_nodes": graph.num_nodes, "num_edges": graph.num_edges},
        "params": {"tau": float(params.tau), "alpha": float(params.alpha), "top_k": int(params.top_k)},
        "optimizer": _jsonable(opt_meta),
        "config": _jsonable(config),
        "created": time.time(),
        **_jsonable(extra or {}),
    }
    if version >= 2:
        header["data_state"] = _jsonable(data_state)
    header["sha256"] = _digest(header, arrays)
    buf = io.BytesIO()
    np.savez(buf, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), **arrays)
    out = Path(path)
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

    Args:
        graph: when given, the checkpoint must have been written for this graph.

    Raises:
        CheckpointError: missing, corrupt or truncated file; not a checkpoint; a newer
            (unsupported) format version; a checksum mismatch; another graph.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist or is not a file")
    size = p.stat().st_size
    try:
        with np.load(p, allow_pickle=False) as z:
            names = list(z.files)
            if "header" not in names:
                raise CheckpointError(f"{p} is not an energetic_wgpu checkpoint (no header)")
            raw_header = z["header"]
            arrays = {n: z[n] for n in names if n != "header"}
        bad = [n for n, a in (("header", raw_header), *arrays.items()) if not isinstance(a, np.ndarray)]
        if bad:  # np.load hands back raw bytes for a member that is not a .npy array
            raise CheckpointError(f"{p} is corrupt: member(s) {bad} are not arrays")
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, zipfile.LargeZipFile) as exc:
        raise CheckpointError(
            f"{p} ({size} bytes) is corrupt or truncated, not a readable checkpoint: {type(exc).__name__}: {exc}"
        ) from None
    except Exception as exc:  # zlib.error and friends from a damaged member
        raise CheckpointError(f"{p} is corrupt: {type(exc).__name__}: {exc}") from None
    try:
        header = json.loads(bytes(raw_header.astype(np.uint8)).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{p} is corrupt: its header is not valid JSON ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{p} is not an energetic_wgpu checkpoint (format {header.get('format')!r})")
    version = header.get("version")
    if not isinstance(version, int):
        raise CheckpointError(f"{p} has no valid format version (got {version!r})")
    if version > VERSION:
        raise CheckpointError(
            f"{p} has format version {version}, newer than this energetic_wgpu reads (versions "
            f"{READABLE[0]}..{VERSION}); upgrade energetic_wgpu to load it"
        )
    if version not in READABLE:
        raise CheckpointError(f"{p} has format version {version}, which is no longer supported (reads {READABLE})")
    if header.get("sha256") != _digest(header, arrays):
        raise CheckpointError(f"{p} is corrupt: its SHA-256 checksum does not match the content")
    missing = [f"{k}/{n}" for k in ("params", "opt/m", "opt/v") for n in PARAM_NAMES if f"{k}/{n}" not in arrays]
    if missing:
        raise CheckpointError(f"{p} is incomplete: missing arrays {missing}")
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
    opt = dict(header.get("optimizer") or {})
    opt["m"] = {n: arrays[f"opt/m/{n}"] for n in PARAM_NAMES}
    opt["v"] = {n: arrays[f"opt/v/{n}"] for n in PARAM_NAMES}
    known = {"format", "version", "step", "graph", "params", "optimizer", "config", "data_state", "sha256"}
    return Checkpoint(
        step=int(header["step"]),
        params=params,
        optimizer=opt,
        data_state=data_state,
        config=header.get("config"),
        graph_fingerprint=g["fingerprint"],
        num_nodes=int(g["num_nodes"]),
        num_edges=int(g["num_edges"]),
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
