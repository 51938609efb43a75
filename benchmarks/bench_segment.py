"""Seconds per reference of segment_reference on CPU, for each rule, on scikit-image's photos.

Each case is timed end to end from a file on disk (load, shrink, segment, crop), the median of
``--repeats`` runs after one warm-up; MediaPipe's model is loaded inside each call, as a one-off
`choi generate` does. The "36mp" cases are the same photos upscaled to 36 megapixels and saved as
JPEG, as a phone would (decoded at reduced scale), and once as PNG (decoded whole). Prints one JSON
object.

    python benchmarks/bench_segment.py --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from skimage import data

from choi.data.segment import segment_reference

PHONE_PIXELS = 36e6


def _upscaled(rgb: np.ndarray) -> np.ndarray:
    scale = (PHONE_PIXELS / (rgb.shape[0] * rgb.shape[1])) ** 0.5
    size = (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC)


def _photos(folder: Path) -> list[tuple[str, str, Path, dict]]:
    """(case, role, file, keyword arguments) for every rule."""
    astronaut, coffee, bike = data.astronaut(), data.coffee(), data.stereo_motorcycle()[0]
    files = {}
    for name, rgb in (("astronaut", astronaut), ("coffee", coffee), ("motorcycle", bike)):
        files[name] = folder / f"{name}.jpg"
        Image.fromarray(rgb).save(files[name], quality=92)
        files[f"{name}-36mp"] = folder / f"{name}-36mp.jpg"
        Image.fromarray(_upscaled(rgb)).save(files[f"{name}-36mp"], quality=90)
    Image.fromarray(_upscaled(coffee)).save(folder / "coffee-36mp.png", compress_level=1)
    mask = np.zeros(coffee.shape[:2], np.uint8)
    cv2.ellipse(mask, (278, 222), (202, 168), 0, 0, 360, 255, -1)
    Image.fromarray(mask).save(folder / "coffee-mask.png")
    Image.fromarray(np.dstack([coffee, mask])).save(folder / "coffee-cutout.png")
    box = (88 / 741, 95 / 500, 690 / 741, 455 / 500)
    return [
        ("user-mask: coffee", "object", files["coffee"], {"mask": folder / "coffee-mask.png"}),
        ("alpha: coffee cut-out png", "object", folder / "coffee-cutout.png", {}),
        ("plain-background: examples/kick_ball_human.png", "human", Path("examples/kick_ball_human.png"), {}),
        ("mediapipe: astronaut", "human", files["astronaut"], {}),
        ("mediapipe: astronaut 36mp", "human", files["astronaut-36mp"], {}),
        ("grabcut-box: motorcycle", "object", files["motorcycle"], {"box": box}),
        ("grabcut-box: motorcycle 36mp", "object", files["motorcycle-36mp"], {"box": box}),
        ("grabcut-salient: coffee", "object", files["coffee"], {}),
        ("grabcut-salient: motorcycle", "object", files["motorcycle"], {}),
        ("grabcut-salient: coffee 36mp", "object", files["coffee-36mp"], {}),
        ("grabcut-salient: coffee 36mp png", "object", folder / "coffee-36mp.png", {}),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="choi-bench-") as tmp:
        for case, role, path, kwargs in _photos(Path(tmp)):
            ref = segment_reference(path, role, **kwargs)  # warm-up: file cache, imports
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                segment_reference(path, role, **kwargs)
                times.append(time.perf_counter() - start)
            results[case] = {
                "rule": ref.rule,
                "seconds_median": round(statistics.median(times), 3),
                "seconds_min": round(min(times), 3),
                "cut_out": list(ref.silhouette.shape),
            }
    print(
        json.dumps(
            {
                "benchmark": "segment_reference seconds per reference on CPU",
                "repeats": args.repeats,
                "cpu": platform.processor() or platform.machine(),
                "cpu_count": os.cpu_count(),
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
