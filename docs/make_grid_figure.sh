#!/usr/bin/env bash
# Regenerate docs/grid_groups_loss.png and docs/grid_summary.csv (docs/grids.md, "The bundled demo"): the
# bundled grid grids/authors_demo.json (2 stand-in authors × gpt2ish, modern × seeds 0, 1; 8
# tiny cells of 80 steps on the CPU), then the seed-grouped comparison of lmp_plotstats.
# Run from anywhere with lmplay installed (`pip install -e .`).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=out_grid/authors_demo
rm -rf "$OUT"  # start fresh: finished cells there would be skipped
lmp_grid grids/authors_demo.json --devices cpu --jobs 2
lmp_grid grids/authors_demo.json --status
lmp_plotstats "$OUT" --out-dir "$OUT/plots" --band std --csv \
  --compare "exp=gpt2ish,plan=grid_demo_macbeth" "exp=modern,plan=grid_demo_macbeth"
cp "$OUT/plots/groups_loss.png" docs/grid_groups_loss.png
cp "$OUT/plots/summary.csv" docs/grid_summary.csv
echo "wrote docs/grid_groups_loss.png docs/grid_summary.csv"
