#!/usr/bin/env bash
# The project's main job (README), until the SAPA demo lands: set up the
# environment, generate a small segmentation dataset (no download), train the
# tiny SegFormer-shaped model of tests/configs/tiny_seg.py on it, then evaluate
# the checkpoint with tools/test.py. Everything goes to work_dirs/demo/.
#
#   bash tools/demo.sh            # DEMO_ITERS=80 by default (about a minute on 2 cores)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${SAPA_VENV:-$ROOT/.venv}/bin/python"
ITERS="${DEMO_ITERS:-80}"
OUT="$ROOT/work_dirs/demo"
CONFIG="$ROOT/tests/configs/tiny_seg.py"

bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"

echo "[demo] generating data in $OUT/data"
rm -rf "$OUT/data"
"$PY" tests/conftest.py seg "$OUT/data" >/dev/null
export TINY_SEG_ROOT="$OUT/data"

echo "[demo] training $ITERS iterations -> $OUT/train"
"$PY" tools/train.py "$CONFIG" --work-dir "$OUT/train" --cfg-options \
  "train_cfg.max_iters=$ITERS" "train_cfg.val_interval=$ITERS" \
  "default_hooks.checkpoint.interval=$ITERS" "default_hooks.logger.interval=10" \
  "param_scheduler.0.end=$ITERS" \
  > "$OUT/train.out" 2>&1 || { tail -n 40 "$OUT/train.out" >&2; echo "[demo] training failed (log: $OUT/train.out)" >&2; exit 1; }
grep -E "Iter\(train\)" "$OUT/train.out" | sed -E 's/.*(Iter\(train\) \[ *[0-9]+\/[0-9]+\]).*(loss: [0-9.]+).*/[demo]   \1 \2/' || true

echo "[demo] evaluating $OUT/train/iter_$ITERS.pth"
"$PY" tools/test.py "$CONFIG" "$OUT/train/iter_$ITERS.pth" --work-dir "$OUT/test" \
  --out "$OUT/test/pred" > "$OUT/test.out" 2>&1 \
  || { tail -n 40 "$OUT/test.out" >&2; echo "[demo] evaluation failed (log: $OUT/test.out)" >&2; exit 1; }
grep -E "^metric " "$OUT/test.out" | sed 's/^/[demo] /'
echo "[demo] done: checkpoint $OUT/train/iter_$ITERS.pth, predictions $OUT/test/pred/"
