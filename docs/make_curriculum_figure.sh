#!/usr/bin/env bash
# Regenerate docs/curriculum_wsd.png (docs/plans.md): the built-in plan curriculum_wsd at the
# default sizes on the CPU, then its train loss with the stage boundary marked, the LR of every
# step, and the realised mixture, side by side. A few minutes of CPU time on 2 cores (4.5 when
# the figure was made; 12.5 of wall time on a machine shared with other jobs).
# Run from anywhere with lmplay installed (`pip install -e .`).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=out_gpt/curriculum_wsd_figure
rm -rf "$OUT"  # start fresh: an existing checkpoint there would be resumed
lmp_trainer --training-plan curriculum_wsd --device cpu --out-dir "$OUT"
lmp_plotstats "$OUT" --plot lr,mix --plot-train --out-dir "$OUT/plots"
python - "$OUT/plots" docs/curriculum_wsd.png <<'PY'
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg
import matplotlib.pyplot as plt

plots, target = sys.argv[1], sys.argv[2]
panels = ["train_loss.png", "lr.png", "mix.png"]
fig, axes = plt.subplots(1, 3, figsize=(24, 6))
for ax, name in zip(axes, panels):
    ax.imshow(mpimg.imread(f"{plots}/{name}"))
    ax.axis("off")
fig.tight_layout()
fig.savefig(target, dpi=80, metadata={"Software": None})
PY
echo "wrote docs/curriculum_wsd.png"
