"""The LR schedule is a pure function of the step: exact values, and nothing else to restore."""

from __future__ import annotations

import pytest

from lmplay.train.schedule import Schedule, lr_at


def test_warmup_then_constant_exact_values() -> None:
    schedule = Schedule(peak_lr=1e-3, warmup_steps=4, warmup_start_fraction=0.2)
    expected = [2e-4, 4e-4, 6e-4, 8e-4, 1e-3, 1e-3, 1e-3]
    assert [lr_at(step, schedule) for step in range(7)] == pytest.approx(expected, abs=1e-15)


def test_no_warmup_starts_at_peak() -> None:
    assert lr_at(0, Schedule(peak_lr=3e-4)) == 3e-4


def test_cosine_decays_to_min_lr_after_warmup() -> None:
    schedule = Schedule(peak_lr=1.0, warmup_steps=2, kind="cosine", min_lr=0.1, decay_steps=10)
    assert lr_at(2, schedule) == pytest.approx(1.0)
    assert lr_at(7, schedule) == pytest.approx(0.55)  # half way: the mean of peak and floor
    assert lr_at(12, schedule) == pytest.approx(0.1)
    assert lr_at(500, schedule) == pytest.approx(0.1)


def test_linear_decay_is_linear() -> None:
    schedule = Schedule(peak_lr=1.0, kind="linear", min_lr=0.0, decay_steps=4)
    assert [lr_at(s, schedule) for s in range(6)] == pytest.approx([1, 0.75, 0.5, 0.25, 0, 0])


def test_resuming_needs_only_the_step() -> None:
    schedule = Schedule(peak_lr=1e-3, warmup_steps=10, kind="cosine", decay_steps=40)
    uninterrupted = [lr_at(step, schedule) for step in range(60)]
    restored = Schedule(**schedule.to_dict())
    resumed = [lr_at(step, schedule) for step in range(25)] + [
        lr_at(step, restored) for step in range(25, 60)
    ]
    assert resumed == uninterrupted


def test_a_restarted_warmup_ramps_the_decayed_lr_from_its_start_step() -> None:
    base = Schedule(
        peak_lr=1.0, warmup_steps=4, warmup_start_fraction=0.5, kind="linear", decay_steps=20
    )
    restarted = Schedule(**{**base.to_dict(), "warmup_from": 10})
    assert [lr_at(s, restarted) for s in range(4, 10)] == [lr_at(s, base) for s in range(4, 10)]
    decayed = [lr_at(s, base) for s in range(10, 16)]  # 0.7, 0.65, ... on the original decay
    ramp = [0.5, 0.625, 0.75, 0.875, 1, 1]
    assert [lr_at(s, restarted) for s in range(10, 16)] == pytest.approx(
        [d * r for d, r in zip(decayed, ramp, strict=True)]
    )
