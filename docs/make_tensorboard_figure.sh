#!/usr/bin/env bash
# Regenerate docs/tensorboard_grid.png (docs/watching-runs.md): the stats files of a grid's
# cells written as TensorBoard runs (lmp_plotstats --to-tensorboard), shown by TensorBoard and
# captured by headless Chromium. Needs `pip install 'lmplay[tensorboard]'` and Chromium
# (`apt-get install chromium`). Run from anywhere; the grid's cells default to those
# docs/make_grid_figure.sh trains (out_grid/authors_demo).
set -euo pipefail
cd "$(dirname "$0")/.."

CELLS=${1:-out_grid/authors_demo}
LOGDIR=$(mktemp -d)
PORT=6123
lmp_plotstats "$CELLS" --to-tensorboard "$LOGDIR"
tensorboard --logdir "$LOGDIR" --host 127.0.0.1 --port "$PORT" >/dev/null 2>&1 &
BOARD=$!
trap 'kill "$BOARD"; rm -rf "$LOGDIR"' EXIT
# Wait until TensorBoard has read every run's validation losses.
RUNS=$(find "$LOGDIR" -mindepth 1 -maxdepth 1 -type d | wc -l)
until [ "$(curl -sf "http://127.0.0.1:$PORT/data/plugin/scalars/tags" | grep -o 'validation/[^"]*/loss' | wc -l)" -ge $((2 * RUNS)) ]; do
  sleep 1
done
# forceSVG: headless Chromium has no WebGL for TensorBoard's default chart renderer.
chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,800 \
  --run-all-compositor-stages-before-draw --virtual-time-budget=40000 \
  --screenshot=docs/tensorboard_grid.png \
  "http://127.0.0.1:$PORT/?forceSVG=true&tagFilter=validation.*loss#timeseries"
echo "wrote docs/tensorboard_grid.png"
