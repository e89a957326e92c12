#!/usr/bin/env bash
# Training on a Slurm cluster: srun starts one task per GPU (GPUS, GPUS_PER_NODE,
# CPUS_PER_TASK, TASKS_PER_NODE, SRUN_ARGS: see tools/launch.sh).
#
#   [GPUS=8] [GPUS_PER_NODE=8] bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG [WORK_DIR] [train.py options...]
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG [WORK_DIR] [train.py options...]" >&2; exit 2; }
WORK_DIR_ARGS=()
if [ $# -gt 3 ] && [ "${4#-}" = "$4" ]; then  # a WORK_DIR, not an option
  WORK_DIR_ARGS=(--work-dir "$4")
  set -- "${@:1:3}" "${@:5}"
fi
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch.sh" srun "$1" "$2" train.py "$3" "${WORK_DIR_ARGS[@]}" \
  --launcher slurm "${@:4}"
