#!/usr/bin/env bash
# Training on a Slurm cluster: srun starts one task per GPU.
#
#   [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS="..."] \
#     bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG [WORK_DIR] [train.py options...]
#
# GPUS is the total number of tasks. GPUS_PER_NODE=0 runs CPU-only tasks (gloo);
# then TASKS_PER_NODE (default: GPUS) sets how many tasks share a node.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG [WORK_DIR] [train.py options...]" >&2
  exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
shift 3
WORK_DIR_ARGS=()
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
  WORK_DIR_ARGS=(--work-dir "$1")
  shift
fi
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

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec srun -p "$PARTITION" \
  --job-name="$JOB_NAME" \
  "${PER_NODE[@]}" \
  --ntasks="$GPUS" \
  --cpus-per-task="$CPUS_PER_TASK" \
  --kill-on-bad-exit=1 \
  "${EXTRA[@]}" \
  "$PY" -u "$ROOT/tools/train.py" "$CONFIG" "${WORK_DIR_ARGS[@]}" --launcher slurm "$@"
