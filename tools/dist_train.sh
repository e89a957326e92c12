#!/usr/bin/env bash
# Distributed training with torchrun (one process per GPU, or per CPU slot on a
# machine without GPU: the gloo backend is then used automatically).
#
#   bash tools/dist_train.sh CONFIG NPROC_PER_NODE [tools/train.py options...]
#
# Several machines: run it on each with the same MASTER_ADDR/PORT and NNODES, and
# NODE_RANK=0..NNODES-1:
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 PORT=29500 bash tools/dist_train.sh CFG 8
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: bash tools/dist_train.sh CONFIG NPROC_PER_NODE [train.py options...]" >&2; exit 2; }
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch.sh" torchrun "$2" train.py "$1" --launcher pytorch "${@:3}"
