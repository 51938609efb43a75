"""Stage-2 sampler steps, end to end, on held-out HOI-World test requests: how the default was chosen.

Usage:
    python benchmarks/bench_steps.py --data data/hoiw [--n 200] [--skip 1000] [--steps 1,2,4,20]
        [--layout stage1|gt] [--model DIR] [--evaluators DIR] [--threads 2] [--out result.json]

Requests follow `choi eval`'s seeded order of the test split but start at position ``skip``:
`choi eval --n N --seed 0` uses positions 0 … 2N-1 (requests, then real renders for FID), so with
the default ``skip`` 1000 the choice is not tuned on any reported table with N ≤ 500. The next 600
positions are the FID/KID reference. Stage 1 runs once per request (`choi eval`'s two-stage masks:
default settings, the request's seed); stage 2 then renders the same masks with the same seed at
each step count, scored by `choi eval`'s own `score_method`, with stage-2 seconds per image.
``--layout gt`` renders in the true masks instead (`choi eval`'s gt-mask method): stage 2 alone.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from choi.evaluation.benchmark import EvalConfig, load_requests, score_method
from choi.evaluation.evaluators import EvaluatorSuite
from choi.pipelines.baselines import MethodOutput, Request, request_seed
from choi.pipelines.choi import CHOIPipeline

N_REAL = 600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default="choi-tiny")
    parser.add_argument("--evaluators", default=None, help="folder of trained evaluators (default: shipped ones)")
    parser.add_argument("--skip", type=int, default=1000, help="positions of the seeded order left to `choi eval`")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0, help="seed of the order (`choi eval --seed`)")
    parser.add_argument("--steps", default="1,2,4,20")
    parser.add_argument("--layout", choices=("stage1", "gt"), default="stage1", help="masks stage 2 renders in")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="JSON file to write")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = CHOIPipeline.from_pretrained(args.model)
    suite = EvaluatorSuite.load(args.evaluators)
    cfg = EvalConfig(data=args.data, out="", n=args.n, seed=args.seed, evaluators=args.evaluators)
    samples, real = load_requests(cfg, skip=args.skip, n_real=N_REAL)
    real_features = suite.features(np.stack(real))
    requests = [Request.from_sample(s) for s in samples]

    masks = []  # the masks `choi eval`'s two-stage (or gt-mask) method renders in for each request
    for r, s in zip(tqdm(requests, desc="stage 1" if args.layout == "stage1" else "true masks"), samples, strict=True):
        if args.layout == "gt":
            masks.append((s.human_mask[None], s.object_mask[None]))
            continue
        out = pipe.generate_masks(
            human=r.human_ref, object=r.object_ref, interaction=r.text, background=r.background, box=r.box,
            seed=request_seed(r),
        )  # fmt: skip
        masks.append((out.human_masks, out.object_masks))

    result = {
        "data": args.data, "model": args.model, "layout": args.layout, "seed": args.seed,
        "positions": [args.skip, args.skip + args.n], "steps": {},
    }  # fmt: skip
    for steps in (int(v) for v in args.steps.split(",")):
        t0, outputs = time.perf_counter(), []
        for r, (hm, om) in zip(tqdm(requests, desc=f"stage 2, {steps} steps"), masks, strict=True):
            image = pipe.renderer(
                r.human_ref, r.object_ref, r.text, layout_masks=(hm, om), box=r.box, background=r.background,
                seeds=[request_seed(r)], num_inference_steps=steps,
            )[0]  # fmt: skip
            outputs.append(MethodOutput(image, hm[0], om[0]))
        seconds = (time.perf_counter() - t0) / len(requests)
        row = score_method(outputs, samples, real_features, suite, cfg)
        row["stage2_s_per_image"] = seconds
        result["steps"][steps] = row
        ident, quality = row["identity"], row["quality"]
        print(
            f"{steps} steps: acc {row['interaction_acc']:.1f}, retrieval {ident['retrieval_human']:.1f} / "
            f"{ident['retrieval_object']:.1f}, FID {quality['fid']:.2f}, {seconds:.3f} s/image",
            flush=True,
        )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
