#!/usr/bin/env bash
# The project's test command (README): sets up / checks the environment with
# tools/setup_env.sh, then runs the whole test suite with pytest in it.
#
#   bash tools/run_tests.sh                 # everything
#   bash tools/run_tests.sh -m "not slow"   # skip the end-to-end runs
#   bash tools/run_tests.sh tests/test_compat.py -x   # any pytest arguments
#
# Exit code: pytest's, except that "no tests collected" (pytest's 5) is a failure.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${SAPA_VENV:-$ROOT/.venv}/bin/python"

bash "$ROOT/tools/setup_env.sh"

cd "$ROOT"
rc=0
"$PY" -m pytest --durations=15 "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
  echo "run_tests: FAILED: pytest collected no tests (exit code 5)" >&2
  exit 1
fi
exit "$rc"
