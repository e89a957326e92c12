#!/usr/bin/env bash
# srun for tools/slurm_train.sh and tools/slurm_test.sh:
#
#   [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS="..."] \
#     bash tools/srun.sh PARTITION JOB_NAME SCRIPT [SCRIPT arguments...]
#
# starts one task of tools/SCRIPT per GPU. GPUS is the total number of tasks.
# GPUS_PER_NODE=0 runs CPU-only tasks (gloo); then TASKS_PER_NODE (default: GPUS) sets
# how many tasks share a node.
set -euo pipefail
PARTITION=$1
JOB_NAME=$2
SCRIPT=$3
shift 3
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_PY="${SAPA_VENV:-$ROOT/.venv}/bin/python"
PY="${SAPA_PYTHON:-$([ -x "$VENV_PY" ] && echo "$VENV_PY" || echo python3)}"

GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-$(( GPUS < 8 ? GPUS : 8 ))}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
if [ "$GPUS_PER_NODE" -gt 0 ]; then
  PER_NODE=(--gres="gpu:$GPUS_PER_NODE" --ntasks-per-node="$GPUS_PER_NODE")
else
  PER_NODE=(--ntasks-per-node="${TASKS_PER_NODE:-$GPUS}")
fi
# shellcheck disable=SC2206  # SRUN_ARGS is split on purpose
EXTRA=(${SRUN_ARGS:-})

exec srun -p "$PARTITION" \
  --job-name="$JOB_NAME" \
  "${PER_NODE[@]}" \
  --ntasks="$GPUS" \
  --cpus-per-task="$CPUS_PER_TASK" \
  --kill-on-bad-exit=1 \
  "${EXTRA[@]}" \
  "$PY" -u "$ROOT/tools/$SCRIPT" "$@"
