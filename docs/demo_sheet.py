"""Compose docs/demo.png from the outputs of `make demo`.

Usage: python docs/demo_sheet.py [--demo outputs/demo] [--out docs/demo.png]

One row per job of examples/jobs.jsonl: person reference, object reference, stage-1 masks over the
background, then the generated candidates; every tile 128×128.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

TILE = 128


def tile(path: Path) -> np.ndarray:
    image = Image.open(path).convert("RGB")
    image.thumbnail((TILE, TILE), Image.LANCZOS)
    canvas = Image.new("RGB", (TILE, TILE), (240, 240, 240))
    canvas.paste(image, ((TILE - image.width) // 2, (TILE - image.height) // 2))
    return np.asarray(canvas)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", default="outputs/demo")
    parser.add_argument("--jobs", default="examples/jobs.jsonl")
    parser.add_argument("--out", default="docs/demo.png")
    args = parser.parse_args()
    examples = Path(args.jobs).parent
    rows = []
    for line in Path(args.jobs).read_text().splitlines():
        job = json.loads(line)
        folder = Path(args.demo) / job["id"]
        record = json.loads((folder / "choi.json").read_text())
        tiles = [tile(examples / job["human"]), tile(examples / job["object"]), tile(folder / "mask_0_preview.png")]
        tiles += [tile(folder / image["image"]) for image in record["images"]]
        rows.append(np.concatenate(tiles, 1))
    Image.fromarray(np.concatenate(rows, 0)).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
