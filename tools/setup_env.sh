#!/usr/bin/env bash
# Create or update the project's virtual environment (.venv, ignored by git) with the
# pinned OpenMMLab stack of ../shared/DESIGN.md §3. Idempotent: when nothing changed a
# run only checks imports; pip keeps the built mmcv wheel in its cache, so a fresh
# clone on a machine that built it once installs in about a minute.
#
#   SAPA_VENV=/path   use another location for the environment
#   PYTHON=python3.X  interpreter to create it from (default: python3)
#   TORCH_SPEC=...    torch requirement when torch must be installed (default torch==2.13.0)
#
# An installed torch < 2.14 in the base interpreter (e.g. a CUDA build) is kept: the
# environment then sees the base site-packages.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SAPA_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
STAMP="$VENV/.sapa_mm_setup"
BASE_PY="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
WANT="$(cat "$ROOT/setup.cfg" "$ROOT/tools/setup_env.sh" | sha1sum | cut -c1-16)"

say() { echo "[setup_env] $*"; }
fail() {
  echo "[setup_env] FAILED: $1" >&2
  echo "[setup_env] what to do: $2" >&2
  exit 1
}

# Everything the project needs, imported in one go; also the up-to-date check.
CHECK='import torch, mmcv, mmengine, mmseg, mmdet, sapa_mm
from mmcv.ops import nms, roi_align'
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && "$PY" -c "$CHECK" 2>/dev/null; then
  exit 0
fi

# A base torch < 2.14 is kept by letting the venv see the base site-packages.
torch_ok='import sys, torch
v = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
sys.exit(0 if v < (2, 14) else 1)'
venv_flags=()
if "$BASE_PY" -c "$torch_ok" 2>/dev/null; then
  venv_flags=(--system-site-packages)
  say "keeping the base interpreter's torch ($("$BASE_PY" -c 'import torch; print(torch.__version__)'))"
fi
if [ ! -x "$PY" ]; then
  say "creating $VENV"
  "$BASE_PY" -m venv "${venv_flags[@]}" "$VENV" \
    || fail "could not create a virtual environment with $BASE_PY" \
            "install the venv module (Debian: apt-get install python3-venv) or set PYTHON"
fi

pip_install() { "$PY" -m pip install --progress-bar off -q "$@"; }

if ! "$PY" -c "$torch_ok" 2>/dev/null; then
  say "installing $TORCH_SPEC"
  pip_install "$TORCH_SPEC" || fail "pip could not install $TORCH_SPEC" \
    "install torch < 2.14 yourself (pip install 'torch<2.14') and rerun"
fi
TORCH_VERSION="$("$PY" -c 'import torch; print(torch.__version__)')"
# Nothing below may replace the torch mmcv is built against.
CONSTRAINTS="$VENV/constraints.txt"
echo "torch==$TORCH_VERSION" > "$CONSTRAINTS"

say "build tools (setuptools<82 is also needed at run time: mmseg::/mmdet:: bases use pkg_resources)"
pip_install -c "$CONSTRAINTS" "setuptools<82" wheel ninja numpy \
  || fail "pip could not install setuptools<82, wheel, ninja, numpy" "check the network / pip configuration"

if ! "$PY" -c 'from mmcv.ops import nms, roi_align' 2>/dev/null; then
  say "building mmcv 2.1.0 with its compiled ops against torch $TORCH_VERSION"
  say "(about 10 minutes on 2 cores the first time; pip caches the wheel for later runs)"
  MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    pip_install -c "$CONSTRAINTS" --no-build-isolation mmcv==2.1.0 \
    || fail "building mmcv 2.1.0 failed (see the compiler output above)" \
            "mmcv 2.1.0 needs a C++17 compiler (gcc/g++) and torch < 2.14; install them and rerun"
  if ! "$PY" -c 'from mmcv.ops import nms, roi_align' 2>/dev/null; then
    "$PY" -m pip uninstall -y -q mmcv || true
    fail "mmcv 2.1.0 is installed without its compiled ops (mmcv.ops does not import)" \
         "remove the cached wheel (pip cache remove mmcv) and rerun; the build must see torch, so it runs without build isolation"
  fi
fi

say "OpenMMLab stack, demo and test tools"
pip_install -c "$CONSTRAINTS" \
  mmengine==0.10.7 mmsegmentation==1.2.2 mmdet==3.3.0 ftfy regex "opencv-python<5" \
  pycocotools scikit-image matplotlib prettytable \
  pytest onnx onnxruntime onnxscript triton \
  || fail "pip could not install the OpenMMLab packages or the test tools" "see pip's message above"
pip_install -c "$CONSTRAINTS" --no-deps --no-build-isolation -e "$ROOT" \
  || fail "pip could not install sapa_mm in editable mode" "see pip's message above"

"$PY" -c "$CHECK" || fail "the environment does not import (see the error above)" \
  "delete $VENV and rerun tools/setup_env.sh"
echo "$WANT" > "$STAMP"
say "ready: $VENV (torch $TORCH_VERSION)"
