"""The progress bar of a stage, counting toward whichever budget ends it first.

A stage ends at the nearest of its own limits (its documents run out, or its `tokens` or
`steps` budget is spent: the batcher tells the fraction done) or when the run reaches
--max-steps, whichever comes first. The bar shows the percentage of the binding one: the larger
of the two fractions done since the bar started (both grow about linearly, so the larger one
reaches 1 first and tqdm's ETA from its rate is honest). A stage resumed half way starts at the
fraction it had done. When a stage ends early (a stop rule) the bar is filled, since the stage
is done.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}{postfix}"


class StageProgress:
    """A tqdm bar in percent of the binding budget; postfix: step, loss, lr, tok/s."""

    def __init__(self, label: str, stage_fraction: float, step: int, max_steps: int | None) -> None:
        self.start_fraction = min(max(stage_fraction, 0.0), 1.0)
        self.start_step = step
        self.max_steps = max_steps
        self.bar = tqdm(
            total=100.0,
            initial=self._percent(stage_fraction, step),
            desc=label,
            bar_format=BAR_FORMAT,
            mininterval=1.0,
            file=sys.stderr,
            dynamic_ncols=True,
        )

    def _percent(self, stage_fraction: float, step: int) -> float:
        base = self.start_fraction
        by_stage = (stage_fraction - base) / (1.0 - base) if base < 1.0 else 1.0
        by_steps = 0.0
        if self.max_steps is not None:
            steps_left = self.max_steps - self.start_step
            by_steps = (step - self.start_step) / steps_left if steps_left > 0 else 1.0
        fraction = min(1.0, max(by_stage, by_steps, 0.0))
        return 100.0 * (base + (1.0 - base) * fraction)

    def update(self, stage_fraction: float, step: int, **postfix: str) -> None:
        budget = f"{step}/{self.max_steps}" if self.max_steps is not None else str(step)
        self.bar.set_postfix({"step": budget, **postfix}, refresh=False)
        self.bar.n = self._percent(stage_fraction, step)
        self.bar.refresh()

    def finish(self) -> None:
        """The stage is done (its data ran out, or a stop rule ended it): 100%."""
        self.bar.n = 100.0
        self.bar.refresh()

    def __enter__(self) -> StageProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()
