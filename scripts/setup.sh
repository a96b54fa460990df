#!/usr/bin/env bash
# Set up energetic_wgpu on a fresh machine: system GPU drivers (Mesa's software Vulkan and
# OpenGL, so the wgpu backend runs even without a GPU), a virtual environment in .venv and
# the package with its test extra. Safe to run again.
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
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
echo "setup: done ($(.venv/bin/python --version), $(.venv/bin/python -c 'import wgpu; print("wgpu", wgpu.__version__)'))"
