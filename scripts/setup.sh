#!/usr/bin/env bash
# Set up energetic_wgpu on a fresh machine: system GPU drivers (Mesa's software Vulkan and
# OpenGL, so the wgpu backend runs even without a GPU), a virtual environment in .venv and
# the package with its test and torch extras. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
if command -v apt-get >/dev/null 2>&1; then
    want="mesa-vulkan-drivers libvulkan1 libegl1 libgl1-mesa-dri chromium"
    missing=""
    for p in $want; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
    if [ -n "$missing" ]; then
        if [ "$(id -u)" = "0" ] || [ -n "$SUDO" ]; then
            echo "setup: installing system packages:$missing"
            $SUDO apt-get update -qq
            DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
        else
            echo "setup: cannot install$missing (not root, no sudo); the wgpu backend may be unavailable" >&2
        fi
    fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# PyTorch first, pinned, for the optional torch extra (energetic_wgpu.torch) and its tests: on
# the project's machines pip takes the CPU build from the local wheel directory ($PIP_FIND_LINKS);
# it adds 1-4 minutes (34 s of CPU) to a fresh setup. Elsewhere, install the CPU build with
# --index-url https://download.pytorch.org/whl/cpu first, or PyPI's default build (CUDA,
# several GB) comes down.
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test,torch]"
echo "setup: done ($(.venv/bin/python --version), $(.venv/bin/python -c 'import wgpu; print("wgpu", wgpu.__version__)'), $(.venv/bin/python -c 'import torch; print("torch", torch.__version__)' 2>/dev/null || echo "no torch"))"
