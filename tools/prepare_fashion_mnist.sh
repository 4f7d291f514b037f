#!/usr/bin/env bash
# Make Fashion-MNIST available in data/fashion_mnist (the configs' data_root).
# Uses Debian's dataset-fashion-mnist package where it is (or can be) installed;
# otherwise leaves the folder empty and MMPretrain downloads it on first use.
set -euo pipefail
dest=${1:-data/fashion_mnist}
src=/usr/share/datasets/fashion-mnist
files="train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte"
mkdir -p "$dest"
if [ ! -d "$src" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; } || true
fi
if [ -d "$src" ]; then
  for f in $files; do
    [ -s "$dest/$f" ] || gunzip -c "$src/$f.gz" > "$dest/$f"
  done
  echo "Fashion-MNIST ready in $dest (from $src)"
else
  echo "Debian's dataset-fashion-mnist is not available: MMPretrain will download Fashion-MNIST into $dest"
fi
