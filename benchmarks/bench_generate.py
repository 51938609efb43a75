"""End-to-end speed of CHOIPipeline (stage 1 + stage 2) at the model's default settings.

Usage:
    python benchmarks/bench_generate.py [--model choi-tiny|FOLDER] [--device cpu|cuda|mps] [--dtype fp32|fp16|bf16]
        [--offload] [--no-background] [--threads 2] [--runs 7] [--out result.json]

One image per call (num_images=1) from the shipped example references, with background and box
(``--no-background``: the model's default frame, e.g. 512 px for choi-sd), median of ``--runs``
after a warm-up. CPU time is reported next to wall time: on a shared machine, wall time also
counts other processes' turns. On CUDA, the peak GPU memory too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from choi.jobs import load_pipeline

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="choi-tiny")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "mps"))
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"))
    parser.add_argument("--offload", action="store_true", help="diffusers' model CPU offload (choi-sd)")
    parser.add_argument("--no-background", action="store_true", help="no background and box: the default frame")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--example", default="kick_ball", help="examples/<name>_{human,object,background}.png")
    parser.add_argument("--out", default=None, help="JSON file to write")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.model, args.device, args.dtype, args.offload)
    job = next(json.loads(line) for line in (EXAMPLES / "jobs.jsonl").read_text().splitlines() if args.example in line)
    request = dict(
        human=EXAMPLES / job["human"],
        object=EXAMPLES / job["object"],
        background=EXAMPLES / job["background"],
        interaction=job["interaction"],
        box=job["box"],
    )
    if args.no_background:
        del request["background"], request["box"]
    cuda = args.device == "cuda"
    out = pipe(**request, seed=0)  # warm-up
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    wall, cpu, stage = [], [], {"mask": [], "image": []}
    marks: dict[str, float] = {}

    def mark(name: str, step: int, total: int) -> None:
        if step == total:
            marks[name] = time.perf_counter()

    for run in range(args.runs):
        t0, c0 = time.perf_counter(), time.process_time()
        pipe(**request, seed=run, callback=mark)
        if cuda:
            torch.cuda.synchronize()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        stage["mask"].append(marks["mask"] - t0)
        stage["image"].append(marks["image"] - marks["mask"])
    result = {
        "model": args.model,
        "family": pipe.family,
        "device": torch.cuda.get_device_name() if cuda else args.device,
        "dtype": args.dtype,
        "offload": args.offload,
        "threads": args.threads,
        "runs": args.runs,
        "size": out.metadata["size"],
        "mask_steps": out.metadata["stage1"].get("num_inference_steps"),
        "image_steps": out.metadata["stage2"]["steps"],
        "guidance": out.metadata["stage2"]["guidance"],
        "median_wall_s": statistics.median(wall),
        "median_cpu_s": statistics.median(cpu),
        "median_stage1_s": statistics.median(stage["mask"]),
        "median_stage2_s": statistics.median(stage["image"]),
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
