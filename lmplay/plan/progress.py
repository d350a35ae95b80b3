"""Where a run is in its plan: the current stage, the stages done, and the stage's batcher."""

from __future__ import annotations

from typing import Any

from lmplay.data.mixture import check_stage_state
from lmplay.errors import UsageError
from lmplay.plan.format import TrainingPlan

PROGRESS_STATE_VERSION = 1


class PlanProgress:
    """Stateful plan position. Completed stages are remembered by the hash of their definition."""

    def __init__(self, plan: TrainingPlan) -> None:
        self.plan = plan
        self.stage_index = 0
        self.completed: list[str] = []
        self.batcher_state: dict[str, Any] | None = None
        self.source_tokens: dict[str, int] = {}  # target tokens trained from each dataset

    @property
    def finished(self) -> bool:
        return self.stage_index >= len(self.plan.stages)

    def complete_stage(self) -> None:
        self.completed.append(self.plan.stages[self.stage_index].fingerprint(self.plan))
        self.stage_index += 1
        self.batcher_state = None

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": PROGRESS_STATE_VERSION,
            "stage_index": self.stage_index,
            "completed": list(self.completed),
            "current": self._current_fingerprint(),
            "batcher": self.batcher_state,
            "source_tokens": dict(self.source_tokens),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_version(state)
        _check_state(state, len(self.plan.stages))
        self.stage_index = state["stage_index"]
        self.completed = list(state["completed"])
        self.batcher_state = state["batcher"]
        self.source_tokens = dict(state.get("source_tokens", {}))  # absent before mixtures

    def adopt(self, state: dict[str, Any]) -> str:
        """Carry progress of a stored plan over to a changed plan (--override-plan).

        Stages done before and unchanged stay done; the run resumes at the first stage that is
        new or changed. The batcher position is kept only if that stage is unchanged.
        """
        _check_version(state)
        _check_state(state, None)
        fingerprints = self.plan.stage_fingerprints()
        done = 0
        while done < min(len(fingerprints), len(state["completed"])):
            if fingerprints[done] != state["completed"][done]:
                break
            done += 1
        self.stage_index = done
        self.completed = fingerprints[:done]
        same_current = (
            done == state["stage_index"]
            and done < len(fingerprints)
            and state.get("current") == fingerprints[done]
        )
        self.batcher_state = state["batcher"] if same_current else None
        self.source_tokens = dict(state.get("source_tokens", {}))
        if self.finished:
            return "every stage of the plan is already done"
        where = "continuing" if same_current else "starting"
        return f"{where} at stage {done + 1} '{self.plan.stages[done].name}'"

    def _current_fingerprint(self) -> str | None:
        if self.finished:
            return None
        return self.plan.stages[self.stage_index].fingerprint(self.plan)


def _check_state(state: dict[str, Any], stages: int | None) -> None:
    """ValueError naming a malformed piece; `stages`: the plan's length when it must fit."""
    index = state.get("stage_index")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise ValueError(f"stage_index must be an integer >= 0, got {index!r}")
    if stages is not None and index > stages:
        raise ValueError(f"stage_index {index} is past the plan's {stages} stages")
    completed = state.get("completed")
    if not isinstance(completed, list) or not all(isinstance(c, str) for c in completed):
        raise ValueError("completed must be a list of stage fingerprints")
    if not isinstance(state.get("current"), (str, type(None))):
        raise ValueError(f"current must be a stage fingerprint, got {state.get('current')!r}")
    if state.get("batcher") is not None:
        check_stage_state(state["batcher"])
    sources = state.get("source_tokens", {})
    if not isinstance(sources, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
        for k, v in sources.items()
    ):
        raise ValueError("source_tokens must map dataset names to token counts")


def _check_version(state: dict[str, Any]) -> None:
    if state.get("version") != PROGRESS_STATE_VERSION:
        raise UsageError(f"plan progress version {state.get('version')} is not supported")
