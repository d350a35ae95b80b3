"""Derive the two stand-in "authors" of the bundled grid demo (`grids/authors_demo.json`).

Usage: python tools/make_grid_demo_data.py

Each author is one play of the bundled Shakespeare corpus (`lmplay/data/bundled/
shakespeare.jsonl.gz`, one scene per row), so the files are public domain and the demo runs
offline: `authors-macbeth.jsonl.gz` (every scene of Macbeth, a tragedy) and
`authors-dream.jsonl.gz` (every scene of A Midsummer Night's Dream, a comedy), rows
`{"title", "text"}`. They go to `lmplay/plan/builtin/data/`, beside the other stand-ins, where
the built-in plans `grid_demo_macbeth` and `grid_demo_dream` read them. The gzip headers carry no
time or file name, so a rerun writes the same bytes.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from make_plan_standins import CORPUS, OUTPUT, REPO, play_of, write_jsonl_gz

AUTHORS = {
    "authors-macbeth.jsonl.gz": "Macbeth",
    "authors-dream.jsonl.gz": "A Midsummer Night's Dream",
}


def write_authors(output: Path) -> list[Path]:
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        scenes = [json.loads(line) for line in f]
    output.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, play in AUTHORS.items():
        rows = [scene for scene in scenes if play_of(scene["title"]) == play]
        if not rows:
            raise SystemExit(f"no scene of {play!r} in {CORPUS}")
        write_jsonl_gz(output / name, rows)
        paths.append(output / name)
    return paths


def main() -> None:
    for path in write_authors(OUTPUT):
        print(f"{path.relative_to(REPO)}: {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
