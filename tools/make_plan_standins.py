"""Derive the small local data files of the built-in plans `curriculum` and `wiki_local`.

Usage: python tools/make_plan_standins.py

Everything comes from the bundled Shakespeare corpus (`lmplay/data/bundled/shakespeare.jsonl.gz`,
one scene per row), so the files are public domain and the plans run offline. They are written
to `lmplay/plan/builtin/data/` (package data, so built-in plans find them from any folder);
`plans/data` is a link to that folder, so the copies in `plans/` find them too.

- `curriculum-simple.jsonl.gz`: the 64 shortest scenes, `{"title", "text"}`.
- `curriculum-harder.jsonl.gz`: every 5th scene between the 50th and 90th length percentile.
- `curriculum-instruct.jsonl.gz`: `{"prompt", "truth"}` pairs: a passage of 4 to 8 lines from a
  random scene, asked "Which play is this passage from?", answered with the play's title.
- `wiki_local.parquet`: `id`, `title`, `text` like `wikimedia/wikipedia`: every 4th of the
  scenes ranked between the simple and the harder ones by length.

The selection is seeded and the gzip headers carry no time or file name, so a rerun writes the
same bytes (the parquet file also records the pyarrow version that wrote it).
"""

from __future__ import annotations

import gzip
import io
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "lmplay/data/bundled/shakespeare.jsonl.gz"
OUTPUT = REPO / "lmplay/plan/builtin/data"
SIMPLE_SCENES = 64
INSTRUCT_PER_PLAY = 20
QUESTION = "Which play is this passage from?"


def play_of(title: str) -> str:
    """`"The Tempest, scene 1"` -> `"The Tempest"`."""
    return title.rsplit(", scene ", 1)[0]


def passage(text: str, rng: random.Random) -> str:
    lines = [
        line
        for line in text.splitlines()
        if line.strip() and not line.startswith(("ACT ", "SCENE "))
    ]
    length = rng.randint(4, 8)
    start = rng.randrange(max(1, len(lines) - length))
    return "\n".join(lines[start : start + length])[:500]


def instruct_rows(scenes: list[dict], rng: random.Random) -> list[dict]:
    by_play: dict[str, list[dict]] = {}
    for scene in scenes:
        by_play.setdefault(play_of(scene["title"]), []).append(scene)
    rows = []
    for play, play_scenes in by_play.items():
        for _ in range(INSTRUCT_PER_PLAY):
            text = passage(rng.choice(play_scenes)["text"], rng)
            rows.append({"prompt": f"{QUESTION}\n\n{text}\n\nAnswer:", "truth": f" {play}"})
    rng.shuffle(rows)
    return rows


def write_jsonl_gz(path: Path, rows: list[dict]) -> None:
    payload = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", fileobj=buffer, mode="wb", mtime=0) as out:
        out.write(payload)
    path.write_bytes(buffer.getvalue())


def write_standins(output: Path) -> list[Path]:
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        scenes = [json.loads(line) for line in f]
    by_length = sorted(scenes, key=lambda s: (len(s["text"]), s["title"]))
    count = len(by_length)
    simple = by_length[:SIMPLE_SCENES]
    harder = by_length[count // 2 : count * 9 // 10 : 5]
    wiki = by_length[SIMPLE_SCENES : count // 2 : 4]
    output.mkdir(parents=True, exist_ok=True)
    files = {
        "curriculum-simple.jsonl.gz": simple,
        "curriculum-harder.jsonl.gz": harder,
        "curriculum-instruct.jsonl.gz": instruct_rows(scenes, random.Random(0)),
    }
    for name, rows in files.items():
        write_jsonl_gz(output / name, rows)
    table = pa.table(
        {
            "id": [str(i) for i in range(len(wiki))],
            "title": [s["title"] for s in wiki],
            "text": [s["text"] for s in wiki],
        }
    )
    pq.write_table(table, output / "wiki_local.parquet", compression="zstd")
    return [output / name for name in [*files, "wiki_local.parquet"]]


def main() -> None:
    for path in write_standins(OUTPUT):
        print(f"{path.relative_to(REPO)}: {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
