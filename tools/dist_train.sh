#!/usr/bin/env bash
# Distributed training, as MMPretrain's tools/dist_train.sh, with enn_mm loaded:
#   bash tools/dist_train.sh CONFIG NUM_PROCS [train.py args...]
# Python: $PYTHON if set, else the active virtualenv's or conda env's, else
# this project's .venv (tools/setup_env.sh), else `python` on the PATH.
set -euo pipefail
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
REPO="$(cd "$(dirname "$0")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
    if [ -n "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ] || [ ! -x "$REPO/.venv/bin/python" ]; then
        PYTHON=python
    else
        PYTHON="$REPO/.venv/bin/python"
    fi
fi

PYTHONPATH="$REPO":${PYTHONPATH:-} \
"$PYTHON" -m torch.distributed.run \
    --nnodes=$NNODES \
    --node_rank=$NODE_RANK \
    --master_addr=$MASTER_ADDR \
    --nproc_per_node=$GPUS \
    --master_port=$PORT \
    "$REPO/tools/train.py" \
    "$CONFIG" \
    --launcher pytorch "${@:3}"
