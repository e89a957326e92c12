#!/usr/bin/env bash
# Evaluation on a Slurm cluster: srun starts one task per GPU (see tools/srun.sh for
# GPUS, GPUS_PER_NODE, CPUS_PER_TASK, TASKS_PER_NODE, SRUN_ARGS).
#
#   [GPUS=8] [GPUS_PER_NODE=8] bash tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py options...]
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: bash tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py options...]" >&2
  exit 2
fi
exec bash "$(dirname "${BASH_SOURCE[0]}")/srun.sh" "$1" "$2" test.py "$3" "$4" --launcher slurm "${@:5}"
