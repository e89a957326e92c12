#!/usr/bin/env bash
# Evaluation on a Slurm cluster: srun starts one task per GPU (GPUS, GPUS_PER_NODE,
# CPUS_PER_TASK, TASKS_PER_NODE, SRUN_ARGS: see tools/launch.sh).
#
#   [GPUS=8] [GPUS_PER_NODE=8] bash tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py options...]
set -euo pipefail
[ $# -ge 4 ] || { echo "usage: bash tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py options...]" >&2; exit 2; }
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch.sh" srun "$1" "$2" test.py "$3" "$4" --launcher slurm "${@:5}"
