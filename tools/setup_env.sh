#!/usr/bin/env bash
# Create .venv (if needed) and install the pinned stack and enn-mm into it.
# faiss-gpu replaces faiss-cpu where an NVIDIA GPU is visible.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
extra=cpu
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && extra=gpu
echo "[enn-mm] installing the stack into .venv (faiss: $extra) ..."
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extra,eclip,tests]"
