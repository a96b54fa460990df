"""Process environment the GPU drivers expect.

Mesa's drivers (lavapipe, llvmpipe) print "XDG_RUNTIME_DIR is invalid or not set in the
environment" when that variable does not name a directory, which is common in containers,
CI runners and ``sudo`` shells. :func:`ensure_xdg_runtime_dir` points it at a private
temporary directory in that case; the command line calls it first thing and the wgpu backend
before it asks wgpu for adapters (when the drivers load).
"""

from __future__ import annotations

import os
import tempfile

__all__ = ["ensure_xdg_runtime_dir"]

_VAR = "XDG_RUNTIME_DIR"


def ensure_xdg_runtime_dir() -> str:
    """Make ``$XDG_RUNTIME_DIR`` an existing directory; returns its value.

    An existing directory is kept. Otherwise (unset, empty, or not a directory) the variable
    is set to a new private directory (mode 0700) under the system's temporary folder.
    """
    current = os.environ.get(_VAR, "")
    if current and os.path.isdir(current):
        return current
    path = tempfile.mkdtemp(prefix="energetic-wgpu-xdg-")
    os.environ[_VAR] = path
    return path
