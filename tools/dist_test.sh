#!/usr/bin/env bash
# Distributed evaluation with torchrun (GPU: nccl; CPU-only machine: gloo).
#
#   bash tools/dist_test.sh CONFIG CHECKPOINT NPROC_PER_NODE [tools/test.py options...]
#
# Several machines: NNODES, NODE_RANK, MASTER_ADDR, PORT as for dist_train.sh.
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: bash tools/dist_test.sh CONFIG CHECKPOINT NPROC_PER_NODE [test.py options...]" >&2; exit 2; }
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch.sh" torchrun "$3" test.py "$1" "$2" --launcher pytorch "${@:4}"
