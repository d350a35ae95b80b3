"""StopRequest in-process: real signals sent to this process."""

from __future__ import annotations

import os
import signal

from lmplay.train.signals import StopRequest


def test_first_signal_decides_and_handlers_are_restored() -> None:
    before = signal.getsignal(signal.SIGINT)
    with StopRequest() as stop:
        assert not stop.requested and stop.exit_code == 0
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)  # a scheduler's TERM after the user's Ctrl+C
        assert stop.requested
        assert stop.signal is signal.SIGINT and stop.exit_code == 130
    assert signal.getsignal(signal.SIGINT) is before


def test_sigterm_alone_exits_143() -> None:
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.exit_code == 143


def test_sigusr2_a_schedulers_warning_saves_and_exits_140() -> None:
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGUSR2)  # Slurm's --signal=USR2@N before a preemption
        assert stop.signal is signal.SIGUSR2 and stop.exit_code == 140
