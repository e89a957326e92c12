#!/usr/bin/env bash
# torchrun for tools/dist_train.sh and tools/dist_test.sh:
#
#   bash tools/torchrun.sh NPROC_PER_NODE SCRIPT [SCRIPT arguments...]
#
# runs tools/SCRIPT under torch.distributed.run on this node. Several machines: the same
# MASTER_ADDR / PORT / NNODES on each, NODE_RANK = 0..NNODES-1. The interpreter is
# $SAPA_PYTHON, else the project's .venv, else python3.
set -euo pipefail
NPROC=$1
SCRIPT=$2
shift 2
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_PY="${SAPA_VENV:-$ROOT/.venv}/bin/python"
PY="${SAPA_PYTHON:-$([ -x "$VENV_PY" ] && echo "$VENV_PY" || echo python3)}"

exec "$PY" -m torch.distributed.run \
  --nnodes="${NNODES:-1}" \
  --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" \
  --master_port="${PORT:-29500}" \
  --nproc_per_node="$NPROC" \
  "$ROOT/tools/$SCRIPT" "$@"
