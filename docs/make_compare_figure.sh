#!/usr/bin/env bash
# Regenerate docs/compare_loss.png (docs/stats-and-plots.md, "Comparing architectures"): gpt2ish against modern on
# the default plan ('tiny', the bundled Shakespeare corpus) with the same flags, steps, seed and
# data order. CPU only, so the numbers do not depend on a GPU. A few minutes per run on 2 CPU
# cores (5 minutes each when the figure was made, on a machine shared with other jobs).
# Run from anywhere with lmplay installed (`pip install -e .`).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=out_gpt/compare
FLAGS=(
  --embed-dim 128 --context-len 128 --max-steps 40
  --lr 2e-3 --optimizer-warmup-steps 5
  --validation-interval 64 --validation-samples 32
  --device cpu --out-dir "$OUT"
)

rm -rf "$OUT"  # start fresh: an existing checkpoint there would be resumed
for exp in gpt2ish modern; do
  lmp_trainer --exp "$exp" "${FLAGS[@]}"
done
lmp_plotstats "$OUT" --out-dir "$OUT/plots"
cp "$OUT/plots/loss.png" docs/compare_loss.png
echo "wrote docs/compare_loss.png"
