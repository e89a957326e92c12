#!/usr/bin/env bash
# The project's main job (README): set up the environment (tools/setup_env.sh),
# then run the SAPA demo, tools/demo.py, on its embedded data (no download).
# Arguments go to tools/demo.py, e.g.
#
#   bash tools/demo.sh                      # the default run
#   bash tools/demo.sh --iters 100 --det    # see: .venv/bin/python tools/demo.py --help
#   bash tools/demo.sh --experiments matting  # A2U matting (docs/matting_demo.md)
#   bash tools/demo.sh --experiments depth  # the BTS depth demo (docs/depth_demo.md)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${SAPA_VENV:-$ROOT/.venv}/bin/python"

bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
exec "$PY" tools/demo.py "$@"
