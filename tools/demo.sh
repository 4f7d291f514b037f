#!/usr/bin/env bash
# One command, fresh machine: install, get Fashion-MNIST, train an ENN model,
# test it on the 10k test images, export it to a dense model, check the dense
# model predicts the same, print a summary (also work_dirs/demo/summary.json).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash tools/setup_env.sh
bash tools/prepare_fashion_mnist.sh data/fashion_mnist
.venv/bin/python tools/demo.py --setup-seconds "$(( $(date +%s) - start ))" "$@"
