#!/usr/bin/env bash
# Create or update the project's virtual environment (.venv, ignored by git) with
# the pinned OpenMMLab stack (torch < 2.14, setuptools<82, mmcv 2.1.0 with its
# compiled ops, mmengine 0.10.7, mmsegmentation 1.2.2, mmdet 3.3.0, ftfy, regex),
# the test tools and sapa_mm itself in editable mode. Python 3.10 or 3.11
# (SUPPORTED_PYTHON below, setup.cfg's python_requires): checked before anything is
# created.
#
# Idempotent: when the environment is complete and setup.cfg / this script did not
# change, a run only checks that everything imports (a few seconds). The mmcv wheel
# built here is kept in a wheel cache keyed by the torch version, Python version,
# machine and, for a CUDA torch, the CUDA version and GPU architectures
# (tools/mmcv_env.py), so a fresh clone on the same machine installs it from there
# instead of building mmcv again (10 to 20 minutes on 2 cores, CPU ops only).
#
#   SAPA_VENV=/path         use another location for the environment
#   PYTHON=python3.X        interpreter to create it from (default: python3)
#   TORCH_SPEC=...          torch requirement when torch must be installed
#                           (default: torch==2.13.0, from pip's configured index: on
#                           the public PyPI, Linux x86-64 gets the CUDA build, several
#                           GB; the script says which build it installed)
#   SAPA_WHEEL_CACHE=/path  where built mmcv wheels are kept
#                           (default: ${XDG_CACHE_HOME:-~/.cache}/sapa_mm/wheels)
#   MAX_JOBS=N              parallel compile jobs for mmcv (default: all cores)
#   TORCH_CUDA_ARCH_LIST=.. GPU architectures of mmcv's CUDA ops (a CUDA torch; default:
#                           the visible GPUs', required where none is visible)
#   CUDA_HOME=/path         the CUDA toolkit (nvcc) for them (default: the nvcc on PATH)
#
# An installed torch < 2.14 in the base interpreter (e.g. a CUDA build) is kept: the
# environment then sees the base site-packages and mmcv is built against that torch.
# On failure the script stops with one "FAILED: ..." message and what to do.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SAPA_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
STAMP="$VENV/.sapa_mm_setup"
BASE_PY="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
MMCV_VERSION=2.1.0
# torch 2.13 has no wheels below 3.10; 3.12+ is untested with mmcv 2.1.0's source build
SUPPORTED_PYTHON=(3.10 3.11)
WANT="$(cat "$ROOT/setup.cfg" "$ROOT/tools/setup_env.sh" | sha1sum | cut -c1-16)"
START=$(date +%s)

say() { echo "[setup_env] $*"; }
fail() {
  echo "[setup_env] FAILED: $1" >&2
  echo "[setup_env] what to do: $2" >&2
  exit 1
}

# mmcv's cache key, build settings and health check (CUDA ops run where a GPU is
# visible): tools/mmcv_env.py. Everything else the project needs, imported in one go;
# together they are the up-to-date check.
MMCV_ENV="$ROOT/tools/mmcv_env.py"
mmcv_ok() {
  "$PY" -c "import mmcv, sys; sys.exit(mmcv.__version__ != '$MMCV_VERSION')" 2>/dev/null \
    && "$PY" "$MMCV_ENV" health
}
CHECK="import torch, mmengine, mmseg, mmdet, sapa_mm, pytest, pycocotools, ftfy, regex, warnings
warnings.simplefilter('ignore')
import pkg_resources"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && mmcv_ok >/dev/null 2>&1 \
    && "$PY" -c "$CHECK" >/dev/null 2>&1; then
  exit 0
fi

# pip's configuration here may name extra indexes that lack most packages; their
# "Location ... is ignored" warnings would bury the messages that matter.
pip_quiet() {
  { "$PY" -m pip "$@" --progress-bar off -q 2>&1 1>&3 \
      | { grep -v "is ignored: it is neither a file nor a directory" || true; } >&2
  } 3>&1
}
pip_install() { pip_quiet install "$@"; }

# The interpreter: the venv's when it exists, else the one it will be created from.
python_version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }
supported_python() {
  local v
  for v in "${SUPPORTED_PYTHON[@]}"; do [ "$1" = "$v" ] && return 0; done
  return 1
}
NEEDS="Python ${SUPPORTED_PYTHON[0]} or ${SUPPORTED_PYTHON[1]}"
if [ -x "$PY" ]; then
  VERSION="$(python_version "$PY")" || VERSION=unknown
  supported_python "$VERSION" \
    || fail "$VENV was created with Python $VERSION; sapa_mm needs $NEEDS" \
            "delete $VENV and rerun with PYTHON=python3.11 bash tools/setup_env.sh"
else
  command -v "$BASE_PY" >/dev/null \
    || fail "no Python interpreter '$BASE_PY'" \
            "install Python 3.11 (or 3.10) and rerun with PYTHON=python3.11 bash tools/setup_env.sh"
  VERSION="$(python_version "$BASE_PY")" || VERSION=unknown
  supported_python "$VERSION" \
    || fail "$BASE_PY is Python $VERSION; sapa_mm needs $NEEDS" \
            "install Python 3.11 (or 3.10) and rerun with PYTHON=python3.11 bash tools/setup_env.sh"
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
  say "creating $VENV with $BASE_PY (Python $VERSION)"
  "$BASE_PY" -m venv "${venv_flags[@]}" "$VENV" \
    || fail "could not create a virtual environment with $BASE_PY" \
            "install the venv module (Debian/Ubuntu: apt-get install python3-venv) or set PYTHON"
fi

if ! "$PY" -c "$torch_ok" 2>/dev/null; then
  say "installing $TORCH_SPEC from pip's configured index (on the public PyPI, Linux x86-64" \
      "gets the CUDA build: several GB; docs/install.md, Which torch)"
  pip_install "$TORCH_SPEC" numpy || fail "pip could not install $TORCH_SPEC" \
    "install torch < 2.14 yourself (pip install 'torch<2.14') and rerun"
fi
TORCH_VERSION="$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null)"
TORCH_BUILD="$("$PY" -c 'import torch
v = torch.version
print(f"CUDA {v.cuda} build" if v.cuda else f"ROCm {v.hip} build" if getattr(v, "hip", None) else "CPU build")' 2>/dev/null)"
say "torch $TORCH_VERSION: the $TORCH_BUILD"
# Nothing below may replace the torch that mmcv is built against.
CONSTRAINTS="$VENV/constraints.txt"
echo "torch==$TORCH_VERSION" > "$CONSTRAINTS"

say "build tools (setuptools<82 is also needed at run time: mmseg::/mmdet:: bases use pkg_resources)"
pip_install -c "$CONSTRAINTS" "setuptools<82" wheel ninja numpy \
  || fail "pip could not install setuptools<82, wheel, ninja, numpy" "check the network / pip configuration"

if ! mmcv_ok >/dev/null 2>&1; then
  # mmcv's compiled ops link against torch's C++ ABI, so a wheel is only reusable
  # with the same torch build, and its CUDA ops only on the architectures it was
  # built for: the cache directory is keyed by both.
  KEY="$("$PY" "$MMCV_ENV" key 2>&1)" \
    || fail "cannot tell which mmcv build this machine needs: $KEY" \
            "set TORCH_CUDA_ARCH_LIST (e.g. '8.0;9.0') or run on a GPU node, then rerun"
  WHEELS="${SAPA_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sapa_mm/wheels}/$KEY"
  WHEEL="$(ls "$WHEELS"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n1 || true)"
  if [ -z "$WHEEL" ]; then
    command -v "${CXX:-c++}" >/dev/null \
      || fail "no C++ compiler (${CXX:-c++}) to build mmcv $MMCV_VERSION" \
              "install one (Debian/Ubuntu: apt-get install g++) and rerun"
    "$PY" -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
      || fail "the Python headers (Python.h) needed to build mmcv are missing" \
              "install them (Debian/Ubuntu: apt-get install python3-dev) and rerun"
    BUILD_ENV="$("$PY" "$MMCV_ENV" build-env 2>&1)" \
      || fail "cannot build mmcv's CUDA ops here: $BUILD_ENV" \
              "install the CUDA toolkit matching torch and set CUDA_HOME (nvcc in \$CUDA_HOME/bin), then rerun"
    eval "$BUILD_ENV"
    say "building mmcv $MMCV_VERSION with its compiled ops against torch $TORCH_VERSION" \
        "${TORCH_CUDA_ARCH_LIST:+(CUDA ops for sm $TORCH_CUDA_ARCH_LIST, nvcc from $CUDA_HOME)}"
    say "(10 to 20 minutes on 2 cores, once per machine and torch version; cached in $WHEELS)"
    BUILD_DIR="$(mktemp -d "${TMPDIR:-/tmp}/sapa_mm_mmcv.XXXXXX")"
    # --no-build-isolation: the build must see the installed torch, or setup.py
    # silently leaves the ops out. --no-cache-dir: never take a wheel that pip
    # cached for another torch.
    MAX_JOBS="${MAX_JOBS:-$(nproc 2>/dev/null || echo 2)}" \
      pip_quiet wheel -c "$CONSTRAINTS" --no-deps --no-build-isolation --no-cache-dir \
        -w "$BUILD_DIR" "mmcv==$MMCV_VERSION" \
      || { rm -rf "$BUILD_DIR"; fail "building mmcv $MMCV_VERSION failed (see the compiler output above)" \
           "mmcv $MMCV_VERSION needs a C++17 compiler (g++), the Python headers, torch < 2.14 and, for a CUDA torch, nvcc of the same CUDA version (CUDA_HOME); fix that and rerun"; }
    mkdir -p "$WHEELS"
    mv "$BUILD_DIR"/mmcv-*.whl "$WHEELS"/
    rm -rf "$BUILD_DIR"
    WHEEL="$(ls "$WHEELS"/mmcv-"$MMCV_VERSION"-*.whl | head -n1)"
  else
    say "installing mmcv $MMCV_VERSION from the wheel cache ($WHEEL)"
  fi
  pip_install -c "$CONSTRAINTS" "$WHEEL" \
    || fail "pip could not install $WHEEL" "see pip's message above"
  if ! HEALTH="$(mmcv_ok 2>&1)"; then
    "$PY" -m pip uninstall -y -q mmcv >/dev/null 2>&1 || true
    rm -f "$WHEEL"
    fail "mmcv $MMCV_VERSION was installed without working compiled ops: $HEALTH" \
         "the bad wheel was removed from the cache; rerun to build it again, and if that fails too, check that the compiler works with torch $TORCH_VERSION"
  fi
fi

say "OpenMMLab stack, demo and test tools"
pip_install -c "$CONSTRAINTS" \
  "mmcv==$MMCV_VERSION" mmengine==0.10.7 mmsegmentation==1.2.2 mmdet==3.3.0 ftfy regex \
  "opencv-python<5" pycocotools scikit-image matplotlib prettytable \
  pytest onnx onnxruntime onnxscript triton \
  || fail "pip could not install the OpenMMLab packages or the test tools" "see pip's message above"
pip_install -c "$CONSTRAINTS" --no-deps --no-build-isolation -e "$ROOT" \
  || fail "pip could not install sapa_mm in editable mode" "see pip's message above"

"$PY" -c "$CHECK" || fail "the environment does not import (see the error above)" \
  "delete $VENV and rerun tools/setup_env.sh"
echo "$WANT" > "$STAMP"
say "$(mmcv_ok)"
say "ready: $VENV (torch $TORCH_VERSION) in $(( $(date +%s) - START )) s"
