"""Cell states from the queue's record, the checkpoint and the stats file; the status table."""

from __future__ import annotations

import os
from pathlib import Path

from lmplay.grid.spec import Cell, GridSpec
from lmplay.grid.status import cell_state, format_table, grid_status, write_record
from lmplay.stats.recorder import StatsRecorder


def spec(root: Path, *names: str) -> GridSpec:
    cells = tuple(Cell(name, (("seed", "0"),)) for name in names)
    return GridSpec(name="g", out_root=root, cells=cells, source=root / "grid.json")


def test_states_and_table(tmp_path: Path) -> None:
    grid = spec(tmp_path, "new", "live", "dead", "stopped", "done", "broken")
    for name in ("live", "dead", "stopped", "done", "broken"):
        (tmp_path / name).mkdir()
    write_record(tmp_path / "live", state="running", pid=os.getpid())
    write_record(tmp_path / "dead", state="running", pid=2**22 + 12345)  # no such process
    (tmp_path / "stopped" / "gpt2ish.lmp").write_bytes(b"checkpoint")
    write_record(tmp_path / "done", state="finished", exit_code=0)
    write_record(tmp_path / "broken", state="failed", exit_code=2, error="error: --lr 0 bad")
    stats = StatsRecorder(
        tmp_path / "done" / "gpt2ish.stats.json", run="done", exp="gpt2ish", model="x", meta={}
    )
    stats.add_train({"samples": 8, "tokens": 1234, "steps": 2, "loss": 6.54321})
    stats.add_validation("a", {"samples": 8, "tokens": 1234, "loss": 6.9})
    stats.add_validation("b", {"samples": 8, "tokens": 1234, "loss": 7.25})
    stats.flush()

    states = [cell_state(tmp_path / c.name) for c in grid.cells]
    assert states == ["pending", "running", "pending", "interrupted", "finished", "failed"]
    rows = grid_status(grid)
    assert rows[4].step == 2 and rows[4].tokens == 1234
    assert rows[4].validation_loss == {"a": 6.9, "b": 7.25}
    table = format_table(rows).splitlines()
    assert table[0].split("  ")[0] == "cell"
    assert table[5].split() == ["done", "finished", "2", "1,234", "6.5432", "a=6.9000", "b=7.2500"]
    assert table[6].split(maxsplit=2) == ["broken", "failed", "exit 2: error: --lr 0 bad"]
    assert table[-1] == "6 cells: 2 pending, 1 running, 1 interrupted, 1 finished, 1 failed"
