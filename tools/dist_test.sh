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
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_PY="${SAPA_VENV:-$ROOT/.venv}/bin/python"
PY="${SAPA_PYTHON:-$([ -x "$VENV_PY" ] && echo "$VENV_PY" || echo python3)}"

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m torch.distributed.run \
  --nnodes="${NNODES:-1}" \
  --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" \
  --master_port="${PORT:-29500}" \
  --nproc_per_node="$NPROC" \
  "$ROOT/tools/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "$@"
