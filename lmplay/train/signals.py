"""Turn SIGINT (Ctrl+C), SIGTERM and SIGUSR2 into a request to stop after the current optimizer
step. SIGUSR2 is what Slurm sends ahead of a preemption or the time limit (`--signal`): the run
saves, and the job that requeues it resumes there.

The loop polls `requested`; the signal itself never interrupts a step or a save, so a second
Ctrl+C while saving only repeats the request and the save completes.

`pause_point()` is a test hook (tests/train/test_interrupts.py): it lets a test deliver a signal
at an exact point of the loop. It does nothing unless LMPLAY_TEST_PAUSE is set.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections import Counter
from types import FrameType, TracebackType

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGUSR2: 140}  # 128 + signum


def exit_code_of(stop_signal: signal.Signals | None) -> int:
    """The exit code of a run stopped by `stop_signal` (0 when no signal stopped it)."""
    return EXIT_CODES.get(stop_signal, 1) if stop_signal is not None else 0


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
        return exit_code_of(self.signal)

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
        if self.signal is not None:
            return  # the first signal decides the exit code; the save is already coming
        self.signal = signal.Signals(signum)
        message = (
            f"\n{self.signal.name} received: finishing the current step, then saving "
            "(press Ctrl+C again to no effect; the save always completes)\n"
        )
        # os.write, not print: the handler may run while the loop is inside a write to
        # sys.stderr, and re-entering that buffered stream raises RuntimeError.
        with contextlib.suppress(OSError, ValueError):  # stderr closed or not a real file
            os.write(sys.stderr.fileno(), message.encode())


# Test hook, read once: LMPLAY_TEST_PAUSE="save:2" makes the 2nd `pause_point("save")` of the
# process print "lmplay-test-pause save 2" to stderr, then wait for a line (or EOF) on stdin.
# The test signals the process while it waits there, then releases it.
_PAUSE_AT = os.environ.get("LMPLAY_TEST_PAUSE")
_pause_counts: Counter[str] = Counter()


def pause_point(name: str) -> None:
    """Test hook at a named point of the loop (validate, save, stage_end); a no-op unless set."""
    if _PAUSE_AT is None:
        return
    _pause_counts[name] += 1
    here = f"{name}:{_pause_counts[name]}"
    if here == _PAUSE_AT:
        print(f"lmplay-test-pause {name} {_pause_counts[name]}", file=sys.stderr, flush=True)
        sys.stdin.readline()
