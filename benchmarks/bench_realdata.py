"""Images/s of the HICO-DET image builder on CPU (MediaPipe + GrabCut + shard writing).

Builds a small HICO-format dataset from skimage's astronaut photo (one person, two objects, three
interactions per image, copied N times) and times `build_hico` end to end, one process.

    python benchmarks/bench_realdata.py --n 20
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from PIL import Image
from skimage import data

from choi.data import hico_classes as hc
from choi.data.hico import HicoConfig, build_hico


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="images (3 interactions each)")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="choi-bench-"))
    try:
        images = tmp / "images"
        images.mkdir()
        photo = Image.fromarray(data.astronaut())
        entries = []
        for k in range(args.n):
            name = f"astronaut_{k:04d}.jpg"
            photo.save(images / name, quality=92)
            boxes = [[20, 10, 370, 512], [280, 340, 500, 512], [350, 0, 465, 290]]
            entries.append(
                {
                    "file_name": name,
                    "annotations": [{"bbox": b, "category_id": c} for b, c in zip(boxes, (1, 37, 5), strict=True)],
                    "hoi_annotation": [
                        {"subject_id": 0, "object_id": o, "category_id": hc.VERBS.index(v) + 1}
                        for o, v in ((1, "hold"), (2, "no_interaction"), (2, "inspect"))
                    ],
                }
            )
        (tmp / "ann.json").write_text(json.dumps(entries))
        cfg = HicoConfig(images=str(images), annotations=str(tmp / "ann.json"), resolution=args.resolution)
        start = time.perf_counter()
        summary = build_hico(tmp / "out", cfg, workers=args.workers)
        seconds = time.perf_counter() - start
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"hico builder: {args.n} images, {summary['accepted']} samples at {args.resolution}px in {seconds:.1f} s "
        f"({args.workers} worker(s)): {args.n / seconds:.2f} images/s, {summary['accepted'] / seconds:.2f} samples/s"
    )


if __name__ == "__main__":
    main()
