#!/usr/bin/env bash
# The one launcher behind tools/dist_{train,test}.sh and tools/slurm_{train,test}.sh:
#
#   bash tools/launch.sh torchrun NPROC_PER_NODE SCRIPT [SCRIPT arguments...]
#   bash tools/launch.sh srun PARTITION JOB_NAME SCRIPT [SCRIPT arguments...]
#
# torchrun: tools/SCRIPT under torch.distributed.run on this node; several machines:
# the same MASTER_ADDR / PORT / NNODES on each, NODE_RANK = 0..NNODES-1.
# srun: one task of tools/SCRIPT per GPU; GPUS is the total number of tasks,
# GPUS_PER_NODE=0 runs CPU-only tasks (gloo) with TASKS_PER_NODE (default: GPUS) per
# node; CPUS_PER_TASK (5) and SRUN_ARGS go to srun.
# The interpreter is $SAPA_PYTHON, else the project's .venv, else python3.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_PY="${SAPA_VENV:-$ROOT/.venv}/bin/python"
PY="${SAPA_PYTHON:-$([ -x "$VENV_PY" ] && echo "$VENV_PY" || echo python3)}"

case "$1" in
torchrun)
  exec "$PY" -m torch.distributed.run --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" \
    --nproc_per_node="$2" "$ROOT/tools/$3" "${@:4}" ;;
srun)
  GPUS=${GPUS:-8}
  GPUS_PER_NODE=${GPUS_PER_NODE:-$(( GPUS < 8 ? GPUS : 8 ))}
  if [ "$GPUS_PER_NODE" -gt 0 ]; then
    PER_NODE=(--gres="gpu:$GPUS_PER_NODE" --ntasks-per-node="$GPUS_PER_NODE")
  else
    PER_NODE=(--ntasks-per-node="${TASKS_PER_NODE:-$GPUS}")
  fi
  # shellcheck disable=SC2206  # SRUN_ARGS is split on purpose
  EXTRA=(${SRUN_ARGS:-})
  exec srun -p "$2" --job-name="$3" "${PER_NODE[@]}" --ntasks="$GPUS" \
    --cpus-per-task="${CPUS_PER_TASK:-5}" --kill-on-bad-exit=1 "${EXTRA[@]}" \
    "$PY" -u "$ROOT/tools/$4" "${@:5}" ;;
*)
  echo "usage: bash tools/launch.sh torchrun|srun ..." >&2
  exit 2 ;;
esac
