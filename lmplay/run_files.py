"""RunFiles: every path a run may write, derived from its checkpoint path in this one place.

A run is named by its checkpoint, `FOLDER/STEM.lmp`. Everything else it writes lies beside it
and starts with the same stem:

    FOLDER/STEM.lmp                    the checkpoint (resumed from)
    FOLDER/STEM.stats.jsonl            its stats (whatever --out-dir says)
    FOLDER/STEM.lmp.lock               the run lock, created by lmplay itself
    FOLDER/STEM.best.lmp               --keep-best: the run at its best validation loss
    FOLDER/STEM.last-good.lmp          the state before a step diverged
    FOLDER/STEM.step00000042.lmp       --keep-last: rolling step checkpoints
    FOLDER/STEM.stage-NAME.lmp         the run at the end of stage NAME
    FOLDER/STEM.tensorboard/           --log-to tensorboard: its event files
    FOLDER/mlruns/, FOLDER/wandb/      --log-to mlflow / wandb: their stores, shared by the
                                       folder's runs (each run has its own id in them)
    FOLDER/.STEM.*.tmp-PID             temp files of atomic writes in progress

Two runs never share a file: a checkpoint must end in `.lmp`, and a stem that ends like a
derived name (`.best`, `.last-good`, `.stepN`, `.stage-...`) is refused, so no run's
checkpoint, stats or lock is another run's best, step or stage file. A stage's file name is
`stage-` and the stage name with unsafe characters escaped (`stage_file_part`), so no stage,
whatever its name, maps onto a best, step or last-good checkpoint, or out of the folder.
The lock guards them all, since they all belong to the one checkpoint it is named after.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from pathlib import Path

from lmplay.errors import UsageError

CHECKPOINT_SUFFIX = ".lmp"
STATS_SUFFIX = ".stats.jsonl"
LEGACY_STATS_SUFFIX = ".stats.json"  # stats format version 1 (one JSON document)
LOCK_SUFFIX = ".lock"  # after the checkpoint's full name: STEM.lmp.lock
STAGE_PREFIX = "stage-"
STEP_DIGITS = 8
SAFE_CHARS = re.compile(r"[A-Za-z0-9_.+-]")
_DERIVED_STEM = re.compile(r"\.(best|last-good|step[0-9]+|stage-.*)$")
_STEP_FILE = re.compile(rf"\.step([0-9]{{{STEP_DIGITS}}})\.lmp$")


def stage_file_part(name: str) -> str:
    """`name` as a file-name part: characters outside `SAFE_CHARS` (and '%') as %XX escapes of
    their UTF-8 bytes, so every stage name, however odd, has a file of its own."""
    return "".join(
        char if SAFE_CHARS.fullmatch(char) else "".join(f"%{b:02X}" for b in char.encode())
        for char in name
    )


@dataclass(frozen=True)
class RunFiles:
    """The files of the run whose checkpoint is `checkpoint`."""

    checkpoint: Path

    @classmethod
    def for_checkpoint(cls, path: str | Path, flag: str = "--model") -> RunFiles:
        """The run files of `path`, refused (UsageError naming `flag`) when it cannot name a run."""
        path = Path(path)
        if path.suffix != CHECKPOINT_SUFFIX or path.name == CHECKPOINT_SUFFIX:
            raise UsageError(
                f"{flag} {path}: a checkpoint's name must end in {CHECKPOINT_SUFFIX} (its stats, "
                "lock and other files are named after it)"
            )
        derived = _DERIVED_STEM.search(path.stem)
        if derived:
            raise UsageError(
                f"{flag} {path}: names ending in '{derived.group(0)}{CHECKPOINT_SUFFIX}' are the "
                "best, last-good, step and stage checkpoints lmplay writes beside a run; choose "
                "another name"
            )
        return cls(path)

    @property
    def folder(self) -> Path:
        return self.checkpoint.parent

    @property
    def stem(self) -> str:
        return self.checkpoint.stem

    @property
    def stats(self) -> Path:
        return self._beside(STATS_SUFFIX)

    @property
    def legacy_stats(self) -> Path:
        """Where lmplay before stats format 2 kept the stats: `STEM.stats.json`."""
        return self._beside(LEGACY_STATS_SUFFIX)

    @property
    def lock(self) -> Path:
        return self.checkpoint.with_name(self.checkpoint.name + LOCK_SUFFIX)

    @property
    def tensorboard(self) -> Path:
        """`--log-to tensorboard`: the run's event files."""
        return self._beside(".tensorboard")

    @property
    def mlflow_store(self) -> Path:
        """`--log-to mlflow` without MLFLOW_TRACKING_URI: a store the folder's runs share."""
        return self.folder / "mlruns"

    @property
    def best(self) -> Path:
        return self._beside(f".best{CHECKPOINT_SUFFIX}")

    @property
    def last_good(self) -> Path:
        return self._beside(f".last-good{CHECKPOINT_SUFFIX}")

    def stage(self, name: str) -> Path:
        """The checkpoint saved when stage `name` ends."""
        return self._beside(f".{STAGE_PREFIX}{stage_file_part(name)}{CHECKPOINT_SUFFIX}")

    def step(self, step: int) -> Path:
        """The rolling checkpoint of `--keep-last` at optimizer step `step`."""
        return self._beside(f".step{step:0{STEP_DIGITS}d}{CHECKPOINT_SUFFIX}")

    def step_checkpoints(self) -> list[Path]:
        """This run's rolling step checkpoints on disk, oldest first (only names `step()` makes)."""
        prefix = self.stem
        found = []
        if not self.folder.is_dir():
            return found
        for path in self.folder.iterdir():
            name = path.name
            if name.startswith(prefix) and _STEP_FILE.fullmatch(name[len(prefix) :]):
                found.append(path)
        return sorted(found)

    def checkpoints(self) -> list[Path]:
        """Every checkpoint this run has on disk: the main one, best, last-good, steps, stages."""
        names = [self.checkpoint, self.best, self.last_good, *self.step_checkpoints()]
        stage_glob = f"{glob.escape(self.stem)}.{STAGE_PREFIX}*{CHECKPOINT_SUFFIX}"
        names += sorted(self.folder.glob(stage_glob)) if self.folder.is_dir() else []
        return [path for path in names if path.is_file()]

    def written(self, stage_names: list[str] = ()) -> list[Path]:
        """Every file the run may write, for the up-front check that the folder takes them."""
        fixed = [self.checkpoint, self.stats, self.lock, self.best, self.last_good, self.step(0)]
        return fixed + [self.stage(name) for name in stage_names]

    def _beside(self, suffix: str) -> Path:
        return self.checkpoint.with_name(self.stem + suffix)


def runs_in(folder: Path) -> list[RunFiles]:
    """The runs whose checkpoints lie in `folder` (not their best, step or stage copies)."""
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob(f"*{CHECKPOINT_SUFFIX}")):
        if path.is_file() and not _DERIVED_STEM.search(path.stem):
            found.append(RunFiles(path))
    return found


def stats_of(path: str | Path) -> Path:
    """The stats file of a checkpoint `path`, or `path` itself when it is not a checkpoint."""
    path = Path(path)
    return RunFiles(path).stats if path.suffix == CHECKPOINT_SUFFIX else path
