#!/usr/bin/env bash
# Training on a Slurm cluster: srun starts one task per GPU (see tools/srun.sh for
# GPUS, GPUS_PER_NODE, CPUS_PER_TASK, TASKS_PER_NODE, SRUN_ARGS).
#
#   [GPUS=8] [GPUS_PER_NODE=8] bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG [WORK_DIR] [train.py options...]
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
exec bash "$(dirname "${BASH_SOURCE[0]}")/srun.sh" "$PARTITION" "$JOB_NAME" train.py "$CONFIG" \
  "${WORK_DIR_ARGS[@]}" --launcher slurm "$@"
