#!/usr/bin/env bash
# Prove the GPU path in one go, on a machine with an NVIDIA GPU:
#
#   bash tools/gpu_check.sh OUT_DIR                 # registry reachable
#   WHEELS=/path/to/wheels bash tools/gpu_check.sh OUT_DIR   # offline machine
#
# 1. installs enn-mm with the [gpu] extra (faiss-gpu, never faiss-cpu) into a
#    fresh .venv-gpu. Offline (WHEELS set): the venv sees the machine's own
#    CUDA build of torch (--system-site-packages) and installs the other
#    packages from the wheels in $WHEELS, without an index;
# 2. fails at once if torch sees no GPU or faiss has no GPU support;
# 3. runs the GPU tests (pytest -m gpu, ENN_MM_REQUIRE_GPU=1: a missing GPU is
#    an error, never a skip);
# 4. runs the GPU benchmarks: ENN / dense training step with AMP (ResNet-50
#    batch 64 at 224 px, ViT-B/16; penalty every step and every 10th,
#    retraction every step and every 10th, the exported model) and exact
#    search at 1M and 10M gallery rows with faiss-gpu;
# 5. writes JSON and logs into OUT_DIR and prints a one-screen summary.
# Budget: about 8 minutes on one H200.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: tools/gpu_check.sh OUT_DIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
VENV=.venv-gpu
fail() { echo "[gpu_check] FAILED: $*" | tee -a "$OUT/summary.txt" >&2; exit 1; }

echo "[gpu_check] $(date -u +%FT%TZ) installing into $VENV" | tee "$OUT/summary.txt"
rm -rf "$VENV"
if [ -n "${WHEELS:-}" ]; then
  "$PY" -m venv --system-site-packages "$VENV"
  "$VENV/bin/python" -m pip install -q --no-index --find-links "$WHEELS" --no-deps \
      "$WHEELS"/*.whl > "$OUT/install.log" 2>&1 || fail "wheel install (see install.log)"
  "$VENV/bin/python" -m pip install -q --no-index --no-deps --no-build-isolation -e . \
      >> "$OUT/install.log" 2>&1 || fail "enn-mm install (see install.log)"
else
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q -c requirements/constraints.txt -e ".[gpu,lite,tests]" \
      > "$OUT/install.log" 2>&1 || fail "pip install -e .[gpu,lite,tests] (see install.log)"
fi
P="$VENV/bin/python"

"$P" - <<'PYEOF' 2>&1 | tee "$OUT/env.txt" || fail "no usable GPU (see env.txt)"
import sys, torch, faiss
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'faiss', faiss.__version__)
if not torch.cuda.is_available():
    sys.exit('torch sees no CUDA GPU')
print('gpu', torch.cuda.get_device_name(0), torch.cuda.device_count())
if not hasattr(faiss, 'StandardGpuResources') or faiss.get_num_gpus() == 0:
    sys.exit('faiss has no GPU support: faiss-cpu is installed instead of faiss-gpu')
print('faiss gpus', faiss.get_num_gpus())
PYEOF

status=0
echo "[gpu_check] pytest -m gpu" | tee -a "$OUT/summary.txt"
ENN_MM_REQUIRE_GPU=1 timeout 300 "$P" -m pytest tests -m gpu -rs -q -p no:cacheprovider \
    --junitxml="$OUT/pytest_gpu.xml" > "$OUT/pytest_gpu.log" 2>&1 || status=1
tail -n 3 "$OUT/pytest_gpu.log" | tee -a "$OUT/summary.txt"

echo "[gpu_check] training-step benchmark (AMP bf16)" | tee -a "$OUT/summary.txt"
timeout 240 "$P" tools/benchmarks/enn_overhead.py --device cuda --amp bf16 --settings gpu \
    --models resnet50 vit-b --iters 5 --intervals 10 \
    > "$OUT/enn_overhead_gpu.json" 2> "$OUT/enn_overhead_gpu.log" || status=1

echo "[gpu_check] retrieval benchmark (faiss-gpu, 1M and 10M)" | tee -a "$OUT/summary.txt"
timeout 180 "$P" tools/benchmarks/retrieval_eval.py --galleries 1000000 --stream-10m \
    --threads 16 --max-seconds 60 --max-gb 60 --mmpretrain-max-gallery 0 \
    > "$OUT/retrieval_gpu.json" 2> "$OUT/retrieval_gpu.log" || status=1

"$P" - "$OUT" <<'PYEOF' | tee -a "$OUT/summary.txt"
import json, os, sys
out = sys.argv[1]
try:
    for r in json.load(open(os.path.join(out, 'enn_overhead_gpu.json'))):
        print(f"  step {r['model']:9s} {r['mode']:18s} x{r['ratio']}  (range {r.get('ratio_range')})")
except Exception as e:
    print('  step benchmark: no JSON', e)
try:
    text = open(os.path.join(out, 'retrieval_gpu.json')).read()
    print('  retrieval:', text[:600].replace('\n', ' '))
except Exception as e:
    print('  retrieval benchmark: no JSON', e)
PYEOF
[ $status -eq 0 ] || fail "a step failed: see the logs in $OUT"
echo "[gpu_check] all passed; results in $OUT" | tee -a "$OUT/summary.txt"
