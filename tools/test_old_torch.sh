#!/usr/bin/env bash
# The operator and module tests on the oldest torch sapa_mm supports, torch 2.1.2, in a
# venv of its own with torch alone (no OpenMMLab packages): the torch < 2.4 code path
# (no torch.library.custom_op: plain autograd Functions, Dynamo given standard ops) on a
# real old torch rather than on torch 2.13 with that API hidden.
#
#   bash tools/test_old_torch.sh            # set up the venv (once) and run the tests
#   bash tools/test_old_torch.sh --setup    # only set up the venv
#   bash tools/test_old_torch.sh -x -k fade # pytest arguments
#
# PyPI has only CUDA builds of torch 2.1 for Linux: about 2.6 GB downloaded and 4.7 GB
# in the venv (it runs on the CPU). .ci/run starts this beside the mmcv build.
# Env: SAPA_OLD_TORCH_VENV (default .venv-torch2.1), PYTHON (default python3).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SAPA_OLD_TORCH_VENV:-$ROOT/.venv-torch2.1}"
TORCH=2.1.2
PY="$VENV/bin/python"

if ! "$PY" -c "import torch, pytest; assert torch.__version__.split('+')[0] == '$TORCH'" 2>/dev/null; then
  echo "[old-torch] creating $VENV with torch $TORCH (about 2.6 GB from PyPI)"
  "${PYTHON:-python3}" -m venv "$VENV"
  # numpy < 2: torch 2.1 was built against numpy 1; setuptools and wheel for the wheel test
  if ! "$PY" -m pip install -q "torch==$TORCH" 'numpy<2' pytest 'setuptools<82' wheel; then
    echo "[old-torch] error: could not install torch $TORCH from PyPI into $VENV" >&2
    exit 1
  fi
fi
if [ "${1:-}" = "--setup" ]; then
  exit 0
fi

cd "$ROOT"
# the tests that need torch alone; the parts that need mmcv & co. skip themselves
TESTS=(tests/test_ops.py tests/test_op_library.py tests/test_layers.py tests/test_sapa_d.py
       tests/test_fade.py tests/test_dysample.py tests/test_guided.py tests/test_norm_project.py
       tests/test_indexnet_a2u.py tests/test_fidelity.py tests/test_triton_backend.py)
echo "[old-torch] $("$PY" -c 'import torch; print("torch", torch.__version__)'): ${TESTS[*]}"
rc=0
# a base temp of its own: CI runs the main suite at the same time
PYTHONPATH="$ROOT" "$PY" -m pytest -q -p no:cacheprovider --basetemp="${TMPDIR:-/tmp}/sapa_old_torch_tests" \
  "${TESTS[@]}" "$@" || rc=$?
exit "$rc"
