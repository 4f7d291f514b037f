#!/usr/bin/env bash
# Create .venv (if needed) and install enn-mm with the exact stack it is tested
# with (requirements/constraints.txt) into it.
# faiss-gpu replaces faiss-cpu where an NVIDIA GPU is visible.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
extra=cpu
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && extra=gpu
echo "[enn-mm] installing the stack into .venv (faiss: $extra) ..."
.venv/bin/python -m pip install -q --disable-pip-version-check \
    -c requirements/constraints.txt -e ".[$extra,lite,eclip,tests]"
