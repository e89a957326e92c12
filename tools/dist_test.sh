#!/usr/bin/env bash
# Distributed evaluation with torchrun (GPU: nccl; CPU-only machine: gloo).
#
#   bash tools/dist_test.sh CONFIG CHECKPOINT NPROC_PER_NODE [tools/test.py options...]
#
# Several machines: NNODES, NODE_RANK, MASTER_ADDR, PORT as for dist_train.sh.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: bash tools/dist_test.sh CONFIG CHECKPOINT NPROC_PER_NODE [test.py options...]" >&2
  exit 2
fi
CONFIG=$1
CHECKPOINT=$2
NPROC=$3
shift 3
exec bash "$(dirname "${BASH_SOURCE[0]}")/torchrun.sh" "$NPROC" test.py "$CONFIG" "$CHECKPOINT" \
  --launcher pytorch "$@"
