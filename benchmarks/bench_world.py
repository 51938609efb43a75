"""HOI-World rendering throughput on one CPU core.

Usage: python benchmarks/bench_world.py [--n 500] [--resolution 128] [--profile]

Renders ``--n`` full samples (target, masks, keypoints, both references, background) of the train
split after a short warm-up (scene panoramas are drawn once per variant and cached, like in a
long data-building run) and prints samples/s. Writes nothing.
"""

from __future__ import annotations

import os

# One core: set before numpy/cv2 start their thread pools.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import cProfile  # noqa: E402
import pstats  # noqa: E402
import time  # noqa: E402

import cv2  # noqa: E402

from choi.world import render_sample  # noqa: E402
from choi.world.scenes import N_VARIANTS, SCENES, _panorama  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="samples to render")
    parser.add_argument("--resolution", type=int, default=128, choices=(64, 128, 256))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true", help="print the top cProfile entries")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    for name in SCENES:  # warm the panorama cache: a one-off cost per (scene, variant, resolution)
        for variant in range(N_VARIANTS):
            _panorama(name, variant, args.resolution)
    for i in range(20):
        render_sample("train", 10**6 + i, args.seed, args.resolution)
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    start, cpu_start = time.perf_counter(), time.process_time()
    for i in range(args.n):
        render_sample("train", i, args.seed, args.resolution)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    # CPU time is reported too: on a shared machine wall time also counts other processes' turns.
    print(
        f"hoi-world: {args.n / elapsed:.1f} samples/s on 1 core at {args.resolution}x{args.resolution} "
        f"({1000 * elapsed / args.n:.2f} ms/sample wall, {args.n / cpu:.1f} samples/s by CPU time, n={args.n})"
    )


if __name__ == "__main__":
    main()
