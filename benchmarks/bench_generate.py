"""End-to-end speed of CHOIPipeline (stage 1 + stage 2) on the CPU at default settings.

Usage:
    python benchmarks/bench_generate.py [--model choi-tiny|FOLDER] [--threads 2] [--runs 7] [--out result.json]

One image per call (num_images=1) from the shipped example references, with background and box,
median of ``--runs`` after a warm-up. CPU time is reported next to wall time: on a shared
machine, wall time also counts other processes' turns.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from choi.pipelines.choi import DEFAULT_GUIDANCE, DEFAULT_STEPS, CHOIPipeline
from choi.pipelines.mask import DEFAULT_STEPS as MASK_STEPS

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="choi-tiny")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--example", default="kick_ball", help="examples/<name>_{human,object,background}.png")
    parser.add_argument("--out", default=None, help="JSON file to write")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = CHOIPipeline.from_pretrained(args.model)
    job = next(json.loads(line) for line in (EXAMPLES / "jobs.jsonl").read_text().splitlines() if args.example in line)
    request = dict(
        human=EXAMPLES / job["human"],
        object=EXAMPLES / job["object"],
        background=EXAMPLES / job["background"],
        interaction=job["interaction"],
        box=job["box"],
    )
    pipe(**request, seed=0)  # warm-up
    wall, cpu, stage = [], [], {"mask": [], "image": []}
    marks: dict[str, float] = {}

    def mark(name: str, step: int, total: int) -> None:
        if step == total:
            marks[name] = time.perf_counter()

    for run in range(args.runs):
        t0, c0 = time.perf_counter(), time.process_time()
        pipe(**request, seed=run, callback=mark)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        stage["mask"].append(marks["mask"] - t0)
        stage["image"].append(marks["image"] - marks["mask"])
    result = {
        "model": args.model,
        "threads": args.threads,
        "runs": args.runs,
        "mask_steps": MASK_STEPS,
        "image_steps": DEFAULT_STEPS,
        "guidance": DEFAULT_GUIDANCE,
        "median_wall_s": statistics.median(wall),
        "median_cpu_s": statistics.median(cpu),
        "median_stage1_s": statistics.median(stage["mask"]),
        "median_stage2_s": statistics.median(stage["image"]),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
