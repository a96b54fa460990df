#!/usr/bin/env bash
# On a machine with a real GPU: the parity check on every hardware wgpu adapter, the train-step
# benchmark at the default and the large size, and the PyTorch step on the same card (CUDA or
# MPS), all written to one JSON file.
#
#   scripts/device-check.sh [--dry-run] [--out FILE]
#
# --dry-run (or ENERGETIC_WGPU_DEVICE_CHECK_DRY_RUN=1): lavapipe, tiny sizes, a few parity cases.
# PYTHON picks the interpreter (default: python3). Exit status 0 when every check passed.
set -euo pipefail
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
exec "${PYTHON:-python3}" -m energetic_wgpu.benchmarking.device_check "$@"
