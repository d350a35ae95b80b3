"""Turn SIGINT (Ctrl+C) and SIGTERM into a request to stop after the current optimizer step.

The loop polls `requested`; the signal itself never interrupts a step or a save, so a second
Ctrl+C while saving only repeats the request and the save completes.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType, TracebackType

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class StopRequest:
    """Context manager installing the handlers; restores the previous ones on exit."""

    def __init__(self) -> None:
        self.signal: signal.Signals | None = None
        self._previous: dict[signal.Signals, object] = {}

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signal, 1) if self.signal is not None else 0

    def __enter__(self) -> StopRequest:
        for signum in EXIT_CODES:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = self.signal is None
        self.signal = signal.Signals(signum)
        if first:
            print(
                f"\n{self.signal.name} received: finishing the current step, then saving "
                "(press Ctrl+C again to no effect; the save always completes)",
                file=sys.stderr,
                flush=True,
            )
