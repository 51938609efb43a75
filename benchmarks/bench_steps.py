"""Stage-2 sampler steps, end to end, on held-out HOI-World test requests: how the default was chosen.

Usage:
    python benchmarks/bench_steps.py --data data/hoiw [--start 1000] [--n 200] [--steps 1,2,4,20]
        [--evaluators DIR] [--threads 2] [--out result.json]

Requests are test samples ``start`` … ``start + n - 1`` (with background and box), apart from the
first ones that ``choi eval`` scores, so the choice is not tuned on the reported table. Stage 1 runs
once per request (its own default settings and the request's seed); stage 2 then renders the same
masks with the same seed at each step count. Per step count: interaction accuracy, identity
similarity and retrieval top-1 among the requests' identities, FID/KID against the next 600 test
renders (the recognizer's features), and stage-2 seconds per image.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from choi.data.batch import object_key
from choi.data.shards import iter_samples
from choi.evaluation import metrics as M
from choi.evaluation.evaluators import EvaluatorSuite
from choi.pipelines.baselines import Request, request_seed
from choi.pipelines.choi import CHOIPipeline
from choi.vocabulary import label_index

N_REAL = 600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default="choi-tiny")
    parser.add_argument("--evaluators", default=None, help="folder of trained evaluators (default: shipped ones)")
    parser.add_argument("--start", type=int, default=1000)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--steps", default="1,2,4,20")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="JSON file to write")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = CHOIPipeline.from_pretrained(args.model)
    suite = EvaluatorSuite.load(args.evaluators)
    pool = list(itertools.islice(iter_samples(args.data, split="test"), args.start + args.n + N_REAL))
    samples, reals = pool[args.start : args.start + args.n], pool[args.start + args.n :]
    requests = [Request.from_sample(s) for s in samples]
    labels = np.array([label_index(s.interaction) for s in samples])
    hid = np.array([s.human_id for s in samples])
    oid = np.array([object_key(s.object_category, s.object_id) for s in samples])
    ref_h = suite.embed(np.stack([s.human_ref for s in samples]), roles=("human",))["human"]
    ref_o = suite.embed(np.stack([s.object_ref for s in samples]), roles=("object",))["object"]
    real_features = suite.features(np.stack([s.image for s in reals]))

    masks = []  # the masks `choi eval`'s two-stage method draws for each request
    for r in tqdm(requests, desc="stage 1"):
        out = pipe(
            human=r.human_ref, object=r.object_ref, interaction=r.text, background=r.background, box=r.box,
            seed=request_seed(r), num_inference_steps=1,
        )  # fmt: skip
        masks.append((out.human_masks, out.object_masks))

    result = {"data": args.data, "requests": [args.start, args.start + args.n], "n_real": len(reals), "steps": {}}
    for steps in (int(v) for v in args.steps.split(",")):
        t0, images = time.perf_counter(), []
        for r, m in zip(tqdm(requests, desc=f"stage 2, {steps} steps"), masks, strict=True):
            images.append(
                pipe.renderer(
                    r.human_ref, r.object_ref, r.text, layout_masks=m, box=r.box, background=r.background,
                    seeds=[request_seed(r)], num_inference_steps=steps,
                )[0]
            )  # fmt: skip
        seconds = (time.perf_counter() - t0) / len(requests)
        images = np.stack(images)
        emb = suite.embed(images)
        fk = M.fid_kid(real_features, suite.features(images))
        row = {
            "interaction_acc": M.accuracy(suite.classify_images(images).argmax(1), labels),
            "human_sim": float(M.cosine_similarity(emb["human"], ref_h).mean()),
            "object_sim": float(M.cosine_similarity(emb["object"], ref_o).mean()),
            "retrieval_human": M.retrieval_top1(emb["human"], hid, ref_h, hid),
            "retrieval_object": M.retrieval_top1(emb["object"], oid, ref_o, oid),
            "fid": fk["fid"],
            "kid": fk["kid_mean"],
            "stage2_s_per_image": seconds,
        }
        result["steps"][steps] = row
        print(steps, json.dumps({k: round(v, 3) for k, v in row.items()}), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
