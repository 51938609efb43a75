"""End-to-end speed of CHOIPipeline (stage 1 + stage 2) on the CPU at default settings.

Usage:
    python benchmarks/bench_generate.py [--model choi-tiny|FOLDER] [--threads 2] [--runs 7] [--out result.json]

One image per call (num_images=1) from the shipped example references, with background and box,
median of ``--runs`` after a warm-up. CPU time is reported next to wall time: on a shared
machine, wall time also counts other processes' turns.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch

from choi.pipelines.choi import CHOIPipeline
from choi.pipelines.request import GenerationRequest

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
    fields = ("human", "object", "background", "interaction", "box")
    request = GenerationRequest.from_dict({k: job[k] for k in fields}, base=EXAMPLES)
    warm = pipe(dataclasses.replace(request, seed=0))  # warm-up; its metadata says what the defaults are
    wall, cpu, stage = [], [], {"mask": [], "image": []}
    marks: dict[str, float] = {}

    def mark(name: str, step: int, total: int) -> None:
        if step == total:
            marks[name] = time.perf_counter()

    for run in range(args.runs):
        t0, c0 = time.perf_counter(), time.process_time()
        pipe(dataclasses.replace(request, seed=run), callback=mark)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        stage["mask"].append(marks["mask"] - t0)
        stage["image"].append(marks["image"] - marks["mask"])
    result = {
        "model": args.model,
        "threads": args.threads,
        "runs": args.runs,
        "family": pipe.family,
        "options": warm.metadata["options"],
        "mask_steps": warm.metadata["stage1"].get("num_inference_steps"),
        "mask_guidance": warm.metadata["stage1"].get("guidance_scale"),
        "image_steps": warm.metadata["stage2"]["steps"],
        "guidance": warm.metadata["stage2"]["guidance"],
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
