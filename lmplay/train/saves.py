"""Every checkpoint a run writes, from the session's one component table, on rank 0 only.

The run's checkpoint (on interval, at a stop, after each stage beside its stage copy), the best
validation point (`--keep-best`), rolling step checkpoints (`--keep-last`) and the last good
state before a diverged step. Every rank gathers the components (gathering FSDP shards is a
collective); rank 0 writes, atomically, and every rank returns once the file is complete.
"""

from __future__ import annotations

from pathlib import Path

from lmplay.train.checkpoint import save_checkpoint
from lmplay.train.session import Session
from lmplay.train.signals import pause_point


class RunSaves:
    def __init__(self, session: Session) -> None:
        self.s = session

    def checkpoint(self, also: Path | None = None) -> None:
        """The run's checkpoint; with `also` (a stage checkpoint), that file first."""
        s = self.s
        s.stats.flush()
        pause_point("save")
        components = s.checkpoint_map.components()

        def write() -> None:
            if also is not None and also != s.files.checkpoint:
                save_checkpoint(also, components)
            save_checkpoint(s.files.checkpoint, components)

        s.placement.world.on_main(write)

    def best(self) -> None:
        """The run at its best validation point so far."""
        self._write(self.s.files.best)

    def rolling(self) -> None:
        """A step checkpoint; only the newest `--keep-last` of them are kept."""
        s = self.s
        path = s.files.step(s.runner.step)
        components = s.checkpoint_map.components()

        def write() -> None:
            save_checkpoint(path, components)
            for old in s.files.step_checkpoints()[: -s.cfg.io.keep_last]:
                old.unlink(missing_ok=True)

        s.placement.world.on_main(write)

    def last_good(self) -> Path:
        """The state before a step that was not applied (the run's checkpoint is left alone)."""
        self._write(self.s.files.last_good)
        return self.s.files.last_good

    def _write(self, path: Path) -> None:
        components = self.s.checkpoint_map.components()
        self.s.placement.world.on_main(lambda: save_checkpoint(path, components))
