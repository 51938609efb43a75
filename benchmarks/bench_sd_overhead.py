"""What choi-sd's wrapper costs over the bare diffusers call it makes, on the same components and steps.

Usage:
    python benchmarks/bench_sd_overhead.py [--model FOLDER] [--size 128] [--steps 4] [--runs 7] [--threads 1]

Without ``--model`` it writes tiny random SD 1.x parts (tests/sd_components.py) and a choi-sd folder
at ``--size``. Three timings, medians of ``--runs`` interleaved calls after a warm-up:

- ``bare``: ``StableDiffusionInpaintPipeline.__call__`` (the very object choi-sd loaded) with what
  a user would pass by hand: prompt, negative prompt, the background, the repaint mask, the two
  reference cut-outs as ``ip_adapter_image`` and their masks as ``ip_adapter_masks``.
- ``choi``: ``CHOIPipeline(...)`` with the same request and a user layout, so stage 1 is skipped:
  reading and segmenting the references, growing the masks, the same diffusers call, composite,
  metadata (``crop_context=None``: the same frame as the bare call). ``ratio = choi / bare`` is the
  wrapper's cost (DESIGN §7 aims at <= 1.10).
- ``stage1``: choi-tiny's mask stage alone (``generate_masks``): extra work the bare call does not
  do at all, so it is reported on its own, not in the ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from diffusers.image_processor import IPAdapterMaskProcessor
from PIL import Image

from choi.pipelines.choi import CHOIPipeline
from choi.pipelines.inputs import read_background, read_reference
from choi.pipelines.sd import make_model_folder
from choi.pipelines.sd.stages import DEFAULT_GUIDANCE, grow, reference_image

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def tiny_model(folder: Path, size: int) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from sd_components import write_ip_adapter, write_sd_folder

    base, ip = write_sd_folder(folder / "sd-inpaint"), write_ip_adapter(folder / "IP-Adapter")
    return make_model_folder(folder / "model", base, ip, resolution=size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a choi-sd folder (default: tiny random parts)")
    parser.add_argument("--size", type=int, default=128, help="background side = stage 2's working size")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--runs", type=int, default=7)
    # one thread: on a shared 2-core machine two OpenMP threads made both calls ~7x slower and noisy
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="JSON file to write")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else tiny_model(Path(tmp), args.size)
        pipe = CHOIPipeline.from_pretrained(model)
    sd, stage, options = pipe.image_stage.pipe, pipe.image_stage, pipe.options_class()

    # One request: example references, a background of --size, a fixed layout (person left, object right).
    n = args.size
    human, obj = EXAMPLES / "kick_ball_human.png", EXAMPLES / "kick_ball_object.png"
    bg = np.asarray(Image.open(EXAMPLES / "kick_ball_background.png").convert("RGB").resize((n, n)))
    hm, om = np.zeros((n, n), bool), np.zeros((n, n), bool)
    hm[n // 4 : 7 * n // 8, n // 4 : n // 2] = True
    om[n // 2 : 7 * n // 8, n // 2 : 3 * n // 4] = True
    interaction = "kick ball"
    request = dict(human=human, object=obj, interaction=interaction, background=bg, mask=(hm, om), steps=args.steps,
                   options={"crop_context": None})  # the whole background, as the bare call paints  # fmt: skip

    # The bare call, built by hand once (what a user of diffusers would prepare)
    refs = [reference_image(*read_reference(human, None, "human")), reference_image(*read_reference(obj, None, "o"))]
    region = Image.fromarray(grow(hm | om, options.mask_grow).astype(np.uint8) * 255)
    masks = IPAdapterMaskProcessor().preprocess([Image.fromarray(m.astype(np.uint8) * 255) for m in (hm, om)], n, n)
    sd.scheduler = stage._scheduler(options.scheduler)
    sd.set_ip_adapter_scale([options.ip_scale_human, options.ip_scale_object])
    background = Image.fromarray(read_background(bg))

    def bare(seed: int) -> None:
        sd(prompt=options.prompt.replace("{interaction}", interaction), negative_prompt=options.negative_prompt,
           image=background, mask_image=region, height=n, width=n, num_inference_steps=args.steps,
           guidance_scale=DEFAULT_GUIDANCE, generator=torch.Generator().manual_seed(seed), ip_adapter_image=refs,
           cross_attention_kwargs={"ip_adapter_masks": [masks[0:1], masks[1:2]]}, output_type="np")  # fmt: skip

    def choi(seed: int) -> None:
        pipe(**request, seed=seed)

    def stage1(seed: int) -> None:
        pipe.generate_masks(human=human, object=obj, interaction=interaction, background=bg, seed=seed)

    calls = {"bare": bare, "choi": choi, "stage1": stage1}
    wall: dict[str, list[float]] = {name: [] for name in calls}
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    for fn in calls.values():
        fn(0)  # warm-up
    for run in range(args.runs):
        order = list(calls) if run % 2 == 0 else list(reversed(calls))  # ABC CBA: drifts in load hit all alike
        for name in order:
            t0, c0 = time.perf_counter(), time.process_time()
            calls[name](run)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    median = {k: statistics.median(v) for k, v in wall.items()}
    median_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    result = {
        "model": str(args.model or "tiny random SD 1.x parts (tests/sd_components.py)"),
        "size": n,
        "steps": args.steps,
        "guidance": DEFAULT_GUIDANCE,
        "threads": args.threads,
        "runs": args.runs,
        "median_bare_s": round(median["bare"], 4),
        "median_choi_s": round(median["choi"], 4),
        "ratio_choi_over_bare": round(median["choi"] / median["bare"], 3),
        "median_stage1_s": round(median["stage1"], 4),
        # CPU time is steadier than wall time on a shared machine (other processes' turns are not counted)
        "median_cpu_bare_s": round(median_cpu["bare"], 4),
        "median_cpu_choi_s": round(median_cpu["choi"], 4),
        "cpu_ratio_choi_over_bare": round(median_cpu["choi"] / median_cpu["bare"], 3),
        "median_cpu_stage1_s": round(median_cpu["stage1"], 4),
        "wall_runs_s": {k: [round(v, 3) for v in vs] for k, vs in wall.items()},
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
