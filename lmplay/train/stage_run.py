"""One stage as the loop runs it: its batcher, schedule, frozen parameters and batch shape.

Everything here is rebuilt from the plan, the settings and the saved batcher position, so a
resumed stage is the stage it was: the LR is a pure function of the stage's step and of its
progress through its budget, both counted in the batcher's cursor.
"""

from __future__ import annotations

from typing import Any

import torch

from lmplay.data.batcher import StageBatcher
from lmplay.data.budget import BatcherCounters, Budget
from lmplay.data.mixture import MixtureBatcher
from lmplay.data.samples import Sample
from lmplay.plan.datasets import PlanData
from lmplay.train.curriculum import StageSettings, frozen_parameters
from lmplay.train.schedule import StageSchedule, lr_at, stage_lr_at


class StageRun:
    def __init__(self, session: Any, data: PlanData, index: int, seed: int) -> None:
        s = session
        self.index = index
        self.stage = s.plan.stages[index]
        self.settings: StageSettings = s.stage_settings[index]
        self.documents = data.stage_documents(self.stage)
        self.batcher = self._batcher(seed)
        if s.progress.batcher_state is not None:
            self.batcher.load_state_dict(s.progress.batcher_state)
        self.schedule: StageSchedule | None = None
        if self.settings.own_schedule:
            self.schedule = self.settings.schedule(self.stage, self.batcher.planned_tokens)
        self.frozen = frozen_parameters(s.model, self.settings.freeze)
        pack_len = s.built.pack_len
        self.pack_len = None if pack_len is None else min(pack_len, self.settings.context_len)
        self.run_schedule = s.schedule  # the flags' schedule, for stages without their own

    def _batcher(self, seed: int) -> StageBatcher | MixtureBatcher:
        stage, settings = self.stage, self.settings
        budget = Budget(tokens=stage.get("tokens"), steps=stage.get("steps"))
        if stage.mix:
            return MixtureBatcher(
                self.documents,
                [weight for _, weight in stage.mix],
                repeat=stage.repeat,
                seed=seed,
                batch_size=settings.batch_size,
                context_len=settings.context_len,
                budget=budget,
                epochs=stage.epochs,
            )
        return StageBatcher(
            self.documents,
            epochs=stage.epochs,
            seed=seed,
            batch_size=settings.batch_size,
            context_len=settings.context_len,
            budget=budget,
        )

    def begin(self, optimizer: torch.optim.Optimizer, counters: BatcherCounters) -> None:
        """Apply the stage's weight decay; fresh moments when it asks, before its first step."""
        optimizer.param_groups[0]["weight_decay"] = self.settings.weight_decay
        if self.settings.reset_optimizer and counters.batches == 0:
            optimizer.state.clear()

    def lr(self, run_step: int, counters: BatcherCounters, samples: list[Sample]) -> float:
        """The LR of the step about to train `samples` (`counters` already count them)."""
        if self.schedule is None:
            return lr_at(run_step, self.run_schedule)
        step = counters.batches - 1
        done = step
        if self.schedule.unit == "tokens":
            done = counters.loss_tokens - sum(len(sample.truth) for sample in samples)
        return stage_lr_at(self.schedule, step, done)

    def count_sources(self, samples: list[Sample], totals: dict[str, int]) -> None:
        """Add the target tokens of `samples` to `totals` by dataset name."""
        for sample in samples:
            name = self.documents.names[self.documents.source_of(sample.doc)]
            totals[name] = totals.get(name, 0) + len(sample.truth)

    def passes(self, cursor: Any) -> dict[str, int] | None:
        """A mixed stage's completed passes over each dataset (repeats); None unmixed."""
        if not isinstance(self.batcher, MixtureBatcher):
            return None
        return dict(zip(self.documents.names, cursor.passes))
