"""Where a run's stages begin, marks for them on any plot drawn against tokens, and the names of
the curriculum plots (`--plot lr,mix`)."""

from __future__ import annotations

from typing import Any

from lmplay.errors import UsageError
from lmplay.stats.runs import RunStats

CURRICULUM_PLOTS = ("lr", "mix")  # what `--plot` may name (`lmplay.stats.curriculum_plot`)


def stage_boundaries(run: RunStats) -> list[tuple[int, str]]:
    """(tokens, stage beginning there) wherever consecutive train records change stage."""
    found = []
    for before, after in zip(run.train, run.train[1:]):
        if before.get("stage") != after.get("stage") and after.get("stage") is not None:
            found.append((int(before["tokens"]), str(after["stage"])))
    return found


def mark_stages(ax: Any, labelled: list[tuple[str, RunStats]], colors: dict[str, Any]) -> None:
    """Dotted lines at every run's stage boundaries, each named by the stage it begins."""
    for label, run in labelled:
        for tokens, stage in stage_boundaries(run):
            if tokens <= 0:
                continue
            ax.axvline(tokens, color=colors[label], ls=":", lw=1.0, alpha=0.8)
            ax.annotate(
                stage, (tokens, 1.0), xycoords=("data", "axes fraction"), rotation=90,
                va="top", ha="right", fontsize="x-small", color=colors[label],
            )  # fmt: skip


def parse_plots(value: str | None) -> tuple[str, ...]:
    """`--plot lr,mix` as names; an unknown one raises `UsageError` listing the valid ones."""
    if not value:
        return ()
    names = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    unknown = [name for name in names if name not in CURRICULUM_PLOTS]
    if unknown or not names:
        raise UsageError(
            f"--plot {value!r}: unknown plot {unknown[0] if unknown else ''!r}; choose from "
            f"{', '.join(CURRICULUM_PLOTS)} (comma-separated)"
        )
    return names
