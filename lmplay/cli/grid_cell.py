"""One grid cell's process: `lmp_trainer` with the cell's flags, then the record of its end.

    python -m lmplay.cli.grid_cell FOLDER LOG_OFFSET -- LMP_TRAINER_ARGS...

`lmp_grid`'s queue starts each cell this way. The cell writes its own `cell.json` when training
ends, so a cell that outlives its queue (the queue killed, the cell in its own session) still
records that it finished, and `lmp_grid --status` reads the truth from the cell's files.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from lmplay.cli import trainer
from lmplay.grid.status import write_final_record

EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 3 or argv[2] != "--" or not argv[1].isdigit():
        print("usage: python -m lmplay.cli.grid_cell FOLDER LOG_OFFSET -- ARGS", file=sys.stderr)
        return EXIT_USAGE
    folder, offset, args = Path(argv[0]), int(argv[1]), argv[3:]
    sys.argv = ["lmp_trainer", *args]  # the trainer's resume hint repeats its own flags
    try:
        code = trainer.main(args)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    except Exception:  # a bug: its traceback goes to the log, its last line into the record
        traceback.print_exc()
        code = 1
    sys.stderr.flush()
    sys.stdout.flush()
    write_final_record(folder, code, offset, args)
    return code


if __name__ == "__main__":
    sys.exit(main())
