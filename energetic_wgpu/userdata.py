"""Reading the user's graph and data files (``graph.path``, ``train.task.path``).

Graph files (:func:`load_graph`), chosen by content and extension:

* a ``.npz`` with ``row_ptr`` int [N+1] and ``col_idx`` int [E] (CSR over source nodes, as
  :meth:`Graph.from_csr`) and optionally ``weights`` float [E];
* a ``.npz`` written by ``scipy.sparse.save_npz``: entry (i, j) of the square [N, N] matrix is
  an edge i -> j and its value the edge's weight (as :meth:`Graph.from_scipy`: every stored
  entry is an edge);
* any other file: a text edge list, one edge per line ``src dst`` or ``src dst weight``
  (separated by spaces, tabs or commas; node ids are ints from 0; ``#`` and ``%`` start a
  comment; N = the largest id + 1, or the N of a ``# nodes: N`` comment, e.g. for nodes
  without edges after the last one used). Edges are grouped by source, keeping the file's order
  within a source; ``graph.edge_perm`` / ``graph.to_input_order`` map per-edge results back
  to the file's edge order (input edge ``k`` is the ``k``-th edge line).

Edge weights are the static prior of each edge: the router's initial ``bias`` (its logit
before the learned Q/K term).

Data files (:func:`load_arrays`): a ``.npz`` with ``energies`` and ``targets``, float [S, N]
(S samples over the graph's N nodes) and optionally ``mask``, bool [S, N] (which target
elements the mse loss counts). :func:`split_holdout` draws the held-out rows.

Every problem raises :class:`~energetic_wgpu.errors.DataError` whose message starts with the
file name and says what is wrong and what is expected.
"""

from __future__ import annotations

import math
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError, EnergeticError
from .graph import Graph

__all__ = ["load_graph", "load_arrays", "split_holdout"]

_SCIPY_KEYS = {"format", "shape"}
_SPLIT = re.compile(r"[\s,]+")
#: a comment declaring the node count, e.g. "# nodes: 100" or SNAP's "# Nodes: 100 Edges: 250"
_NODES = re.compile(r"\s*nodes\s*:?\s*(\d+)", re.I)
_COMMENT = re.compile(r"[#%]")


def _name(path: str | Path) -> str:
    return str(path)


def _open_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    """Every array of a .npz (no pickles), or DataError naming the file."""
    if not path.is_file():
        raise DataError(f"{_name(path)}: no such {what} file")
    try:
        z = np.load(path, allow_pickle=False)
        if isinstance(z, np.ndarray):
            raise DataError(f"{_name(path)}: expected a .npz archive of named arrays, got a single .npy array")
        with z:
            return {k: z[k] for k in z.files}
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{_name(path)}: cannot read it as a .npz archive ({type(exc).__name__}: {exc})") from None


def _is_npz(path: Path) -> bool:
    try:
        return path.suffix.lower() == ".npz" or zipfile.is_zipfile(path)
    except OSError:
        return False


# ------------------------------------------------------------------------ graphs
def _graph_from_npz(path: Path) -> Graph:
    arrays = _open_npz(path, "graph")
    if "row_ptr" in arrays or "col_idx" in arrays:
        missing = [k for k in ("row_ptr", "col_idx") if k not in arrays]
        if missing:
            raise DataError(f"{_name(path)}: missing array {missing[0]!r} (a CSR graph file needs row_ptr and col_idx)")
        extra = sorted(set(arrays) - {"row_ptr", "col_idx", "weights"})
        if extra:
            raise DataError(f"{_name(path)}: unexpected arrays {', '.join(extra)} (allowed: row_ptr, col_idx, weights)")
        return Graph.from_csr(arrays["row_ptr"], arrays["col_idx"], weights=arrays.get("weights"))
    if _SCIPY_KEYS <= set(arrays):
        import scipy.sparse as sp

        try:
            matrix = sp.load_npz(path)
        except Exception as exc:  # scipy raises ValueError/KeyError/... on a damaged file
            raise DataError(f"{_name(path)}: not a readable scipy.sparse .npz ({type(exc).__name__}: {exc})") from None
        return Graph.from_scipy(matrix)
    found = ", ".join(sorted(arrays)) or "none"
    raise DataError(
        f"{_name(path)}: missing arrays: a graph .npz needs row_ptr and col_idx (optional weights), "
        f"or must be written by scipy.sparse.save_npz; arrays found: {found}"
    )


def _parse_id(token: str, path: Path, lineno: int, what: str) -> int:
    try:
        value = int(token)
    except ValueError:
        raise DataError(f"{_name(path)}, line {lineno}: {what} must be an int node id >= 0, got {token!r}") from None
    if value < 0:
        raise DataError(f"{_name(path)}, line {lineno}: {what} must be an int node id >= 0, got {value}")
    return value


def _weight(token: str, path: Path, lineno: int) -> float:
    try:
        w = float(token)
    except ValueError:
        raise DataError(f"{_name(path)}, line {lineno}: the weight must be a number, got {token!r}") from None
    if not math.isfinite(w):
        raise DataError(f"{_name(path)}, line {lineno}: the weight must be finite, got {token!r}")
    return w


def _graph_from_edge_list(path: Path) -> Graph:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{_name(path)}: not a text edge list (not UTF-8) and not a .npz archive") from None
    except OSError as exc:
        raise DataError(f"{_name(path)}: cannot read the graph file ({exc.strerror or exc})") from None
    src: list[int] = []
    dst: list[int] = []
    weights: list[float] = []
    weighted: bool | None = None
    declared: tuple[int, int] | None = None  # (N, line) of a "# nodes: N" comment
    for lineno, raw in enumerate(text.splitlines(), start=1):
        mark = _COMMENT.search(raw)
        line, comment = (raw, "") if mark is None else (raw[: mark.start()], raw[mark.end():])
        m = _NODES.match(comment)
        if m:
            declared = (int(m.group(1)), lineno)
        line = line.strip()
        if not line:
            continue
        tokens = _SPLIT.split(line)
        if len(tokens) not in (2, 3):
            raise DataError(
                f"{_name(path)}, line {lineno}: expected 'src dst' or 'src dst weight', got {raw.strip()!r}"
            )
        if weighted is None:
            weighted = len(tokens) == 3
        elif weighted != (len(tokens) == 3):
            raise DataError(
                f"{_name(path)}, line {lineno}: every line must have a weight or none does "
                f"(earlier lines have {'3' if weighted else '2'} columns, this one {len(tokens)})"
            )
        src.append(_parse_id(tokens[0], path, lineno, "src"))
        dst.append(_parse_id(tokens[1], path, lineno, "dst"))
        if weighted:
            weights.append(_weight(tokens[2], path, lineno))
    used = max(max(src), max(dst)) + 1 if src else 0
    if declared is None and not src:
        raise DataError(
            f"{_name(path)}: the edge list holds no edges (expected lines 'src dst [weight]', "
            "or a '# nodes: N' line for a graph without edges)"
        )
    n = used if declared is None else declared[0]
    if n < used:
        raise DataError(
            f"{_name(path)}, line {declared[1]}: '# nodes: {n}' but the edges use node id {used - 1}"  # type: ignore[index]
        )
    return Graph.from_edges(
        np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64), n,
        weights=np.asarray(weights) if weighted else None,
    )


def load_graph(path: str | Path) -> Graph:
    """Read a graph file (see the module docstring for the formats).

    Args:
        path: a .npz (CSR arrays or scipy.sparse.save_npz) or a text edge list.

    Returns:
        The :class:`Graph` (CSR over source nodes).

    Raises:
        DataError: missing file or arrays, an unreadable file, a bad edge-list line (with its
            line number), out-of-range ids, non-finite weights; the message names the file.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{_name(p)}: no such graph file")
    try:
        return _graph_from_npz(p) if _is_npz(p) else _graph_from_edge_list(p)
    except DataError:
        raise
    except EnergeticError as exc:  # the Graph constructors' checks (ids in range, monotone row_ptr ...)
        raise DataError(f"{_name(p)}: {exc}") from None


# -------------------------------------------------------------------------- data
def _float_2d(arrays: dict[str, np.ndarray], key: str, path: Path, num_nodes: int) -> np.ndarray:
    a = arrays[key]
    if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise DataError(f"{_name(path)}: {key} must be a float array, got dtype {a.dtype}")
    if a.ndim != 2:
        raise DataError(f"{_name(path)}: {key} must be 2-D [S, N] (samples x nodes), got shape {a.shape}")
    if a.shape[1] != num_nodes:
        raise DataError(
            f"{_name(path)}: {key} has {a.shape[1]} columns but the graph has N = {num_nodes} nodes "
            f"(expected shape [S, {num_nodes}])"
        )
    bad = ~np.isfinite(a)
    if bad.any():
        r, c = (int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"{_name(path)}: {key} must be finite, got {key}[{r}, {c}] = {a[r, c]} ({int(bad.sum())} non-finite values)"
        )
    return a.astype(np.float32)


def load_arrays(path: str | Path, num_nodes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Read a data file for a graph of ``num_nodes`` nodes.

    Args:
        path: a .npz with ``energies`` and ``targets`` (float [S, N]) and optionally ``mask``
            (bool [S, N], or 0/1 integers).
        num_nodes: N of the graph the data is for.

    Returns:
        ``(energies, targets, mask)``: float32 [S, N], float32 [S, N], bool [S, N] or None.

    Raises:
        DataError: a missing file or array, unexpected arrays, a shape that does not fit the
            graph, non-finite values, no rows; the message names the file.
    """
    p = Path(path)
    arrays = _open_npz(p, "data")
    missing = [k for k in ("energies", "targets") if k not in arrays]
    if missing:
        found = ", ".join(sorted(arrays)) or "none"
        raise DataError(f"{_name(p)}: missing array {missing[0]!r} (needs energies and targets [S, N], optional mask; "
                        f"arrays found: {found})")
    extra = sorted(set(arrays) - {"energies", "targets", "mask"})
    if extra:
        raise DataError(f"{_name(p)}: unexpected arrays {', '.join(extra)} (allowed: energies, targets, mask)")
    energies = _float_2d(arrays, "energies", p, num_nodes)
    targets = _float_2d(arrays, "targets", p, num_nodes)
    if targets.shape != energies.shape:
        raise DataError(f"{_name(p)}: targets must have the shape of energies {energies.shape}, got {targets.shape}")
    if energies.shape[0] == 0:
        raise DataError(f"{_name(p)}: energies holds no samples (shape {energies.shape}); at least one row is needed")
    mask = arrays.get("mask")
    if mask is not None:
        if mask.shape != energies.shape:
            raise DataError(f"{_name(p)}: mask must have the shape of energies {energies.shape}, got {mask.shape}")
        if mask.dtype != np.bool_:
            if not np.issubdtype(mask.dtype, np.integer) or not np.isin(mask, (0, 1)).all():
                raise DataError(f"{_name(p)}: mask must be bool (or 0/1 integers), got dtype {mask.dtype}")
            mask = mask.astype(bool)
    return energies, targets, mask


def split_holdout(num_samples: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/validation split of ``num_samples`` rows.

    ``ceil(num_samples * val_fraction)`` rows (none when ``val_fraction`` is 0) drawn by
    ``numpy.random.default_rng(seed)`` are held out; both index arrays are sorted (int64).

    Raises:
        DataError: the split would leave no training row.
    """
    n_val = math.ceil(num_samples * val_fraction) if val_fraction > 0 else 0
    if num_samples - n_val < 1:
        raise DataError(
            f"val_fraction {val_fraction:g} of {num_samples} samples leaves no training sample; "
            f"use more samples or a smaller train.task.val_fraction"
        )
    perm = np.random.default_rng(seed).permutation(num_samples)
    return np.sort(perm[n_val:]).astype(np.int64), np.sort(perm[:n_val]).astype(np.int64)
