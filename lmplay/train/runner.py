"""The run's clocks and counters: optimizer steps, micro-steps, samples and tokens."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

RUNNER_STATE_VERSION = 1


@dataclass
class RunnerState:
    """A *step* is one optimizer update; a *micro-step* one forward/backward on a mini-batch."""

    step: int = 0
    micro_step: int = 0
    samples: int = 0
    tokens: int = 0  # real input tokens (no padding) trained on
    loss_tokens: int = 0  # tokens that were targets
    train_seconds: float = 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"version": RUNNER_STATE_VERSION, **asdict(self)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != RUNNER_STATE_VERSION:
            raise ValueError(f"runner state version {state.get('version')} is not supported")
        fields = set(asdict(self))
        missing, unknown = sorted(fields - set(state)), sorted(set(state) - fields - {"version"})
        if missing or unknown:
            raise ValueError(f"runner state lacks {missing} or has unknown {unknown}")
        for key in fields:
            value, kind = state[key], (float, int) if key == "train_seconds" else int
            if not isinstance(value, kind) or isinstance(value, bool) or not value >= 0:
                raise ValueError(f"runner {key} must be a number >= 0, got {value!r}")
        for key in fields:
            setattr(self, key, state[key])
