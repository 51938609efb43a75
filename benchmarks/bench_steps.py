"""Stage-2 sampler steps and the object fit, end to end, on held-out HOI-World test requests: how the
defaults were chosen.

Usage:
    python benchmarks/bench_steps.py --data data/hoiw [--n 200] [--skip 1000] [--steps 1,2,4,20]
        [--object-fit on|off|off,on] [--prior-strength H,O [H,O ...]] [--mask-guidance G [G ...]]
        [--layout-candidates N [N ...]] [--mask-steps N [N ...]] [--zoom model|on|off ...]
        [--composite-margin PX [PX ...]]
        [--layout stage1|gt] [--model DIR]
        [--evaluators DIR] [--threads 2] [--out result.json]

Requests follow `choi eval`'s seeded order of the test split but start at position ``skip``:
`choi eval --n N --seed 0` uses positions 0 … 2N-1 (requests, then real renders for FID), so with
the default ``skip`` 1000 the choice is not tuned on any reported table with N ≤ 500. The next 600
positions are the FID/KID reference. Stage 1 runs once per request (`choi eval`'s two-stage masks:
default settings, the request's seed); stage 2 then renders the same masks with the same seed at
each step count, scored by `choi eval`'s own `score_method`, with stage-2 seconds per image.
``--object-fit`` renders in stage 1's object masks fitted to the object reference's outline (``on``,
the pipeline's default: `choi.pipelines.tiny.stages.fit_object_masks`), as stage 1 drew them
(``off``), or both, one row each. ``--prior-strength`` renders each (human, object) strength of the
warp prior (choi-tiny's option ``prior_strength``: how much of each warped reference is kept as it
is), one row each. ``--mask-guidance`` runs stage 1 at each classifier-free guidance scale
(`choi.pipelines.tiny.mask.DEFAULT_GUIDANCE` by default), one row each, and ``--layout-candidates``
draws that many layouts per request and keeps the best-fitting one
(`choi.pipelines.tiny.stages.draw_layouts`, the option ``layout_candidates``'s default by default),
one row each, with stage-1 seconds per image; ``--mask-steps`` runs stage 1's sampler for that many
steps (`choi.pipelines.tiny.mask.DEFAULT_STEPS` by default), one row each. ``--zoom`` draws the
layouts in a window around the request's box (``on``), in the whole frame (``off``) or as the mask
model's config says (``model``, the default; `choi.pipelines.tiny.mask.MaskPipeline`), one row each.
``--composite-margin`` keeps the background beyond that many pixels (of 128) around the masks (the
option ``composite_margin``'s default by default), one row each. ``--layout gt`` renders in the true
masks instead (`choi eval`'s gt-mask method): stage 2 alone.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from choi.evaluation.benchmark import EvalConfig, load_requests, score_method
from choi.evaluation.evaluators import EvaluatorSuite
from choi.models.image_generator import check_prior_strength
from choi.pipelines.baselines import MethodOutput, Request, request_seed
from choi.pipelines.choi import CHOIPipeline
from choi.pipelines.inputs import read_reference
from choi.pipelines.tiny.mask import DEFAULT_GUIDANCE as MASK_GUIDANCE
from choi.pipelines.tiny.mask import DEFAULT_STEPS as MASK_STEPS
from choi.pipelines.tiny.stages import TinyOptions, fit_object_masks

N_REAL = 600
DEFAULTS = TinyOptions()  # choi-tiny's own option defaults


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default="choi-tiny")
    parser.add_argument("--evaluators", default=None, help="folder of trained evaluators (default: shipped ones)")
    parser.add_argument("--skip", type=int, default=1000, help="positions of the seeded order left to `choi eval`")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0, help="seed of the order (`choi eval --seed`)")
    parser.add_argument("--steps", default="1,2,4,20")
    parser.add_argument("--object-fit", default="on", help="on, off, or both (off,on): stage-1 object masks fitted")
    parser.add_argument(
        "--prior-strength",
        nargs="+",
        default=[",".join(map(str, DEFAULTS.prior_strength))],
        metavar="H,O",
        help="strengths of the warp prior (human,object) to render, one row each",
    )
    parser.add_argument(
        "--mask-guidance", nargs="+", type=float, default=[MASK_GUIDANCE], metavar="G", help="stage-1 guidance scales"
    )
    parser.add_argument(
        "--layout-candidates",
        nargs="+",
        type=int,
        default=[DEFAULTS.layout_candidates],
        metavar="N",
        help="layouts drawn",
    )
    parser.add_argument(
        "--mask-steps", nargs="+", type=int, default=[MASK_STEPS], metavar="N", help="stage-1 sampler steps"
    )
    parser.add_argument(
        "--composite-margin",
        nargs="+",
        type=float,
        default=[DEFAULTS.composite_margin * 128],
        metavar="PX",
        help="of 128",
    )
    parser.add_argument(
        "--zoom", nargs="+", choices=("model", "on", "off"), default=["model"], help="stage-1 zoom on the box"
    )
    parser.add_argument("--layout", choices=("stage1", "gt"), default="stage1", help="masks stage 2 renders in")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="JSON file to write")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fits = [{"on": True, "off": False}[v] for v in args.object_fit.split(",")]
    strengths = [check_prior_strength(v) for v in args.prior_strength]
    zooms = [{"model": None, "on": True, "off": False}[v] for v in args.zoom]
    layouts = list(itertools.product(args.mask_guidance, args.layout_candidates, zooms, args.mask_steps))
    if args.layout == "gt":  # stage-1 settings above, none here
        fits, layouts = [False], [(None, None, None, None)]  # the true masks are used as they are
    pipe = CHOIPipeline.from_pretrained(args.model)
    suite = EvaluatorSuite.load(args.evaluators)
    cfg = EvalConfig(data=args.data, out="", n=args.n, seed=args.seed, evaluators=args.evaluators)
    samples, real = load_requests(cfg, skip=args.skip, n_real=N_REAL)
    real_features = suite.features(np.stack(real))
    requests = [Request.from_sample(s) for s in samples]

    # per request, the references as the pipeline reads them: (rgb, silhouette) of the person and of the object
    refs = [
        (*read_reference(r.human_ref, None, "human reference"), *read_reference(r.object_ref, None, "object reference"))
        for r in requests
    ]
    # per (stage-1 setting, object fit), the masks stage 2 renders in for each request
    masks = {(lay, f): [] for lay in layouts for f in (False, True)}
    stage1_s = {} if args.layout == "gt" else dict.fromkeys(layouts, 0.0)
    for r, s, ref in zip(
        tqdm(requests, desc="stage 1" if args.layout == "stage1" else "true masks"), samples, refs, strict=True
    ):
        if args.layout == "gt":
            masks[(None, None, None, None), False].append((s.human_mask[None], s.object_mask[None]))
            continue
        for layout in layouts:
            g, c, z, ms = layout
            t0 = time.perf_counter()
            out = pipe.generate_masks(
                human=r.human_ref, object=r.object_ref, interaction=r.text, background=r.background, box=r.box,
                seed=request_seed(r), mask_guidance=g, mask_steps=ms,
                options={"layout_candidates": c, "fit_object": False, "zoom": z},
            )  # fmt: skip
            stage1_s[layout] += (time.perf_counter() - t0) / len(requests)
            masks[layout, False].append((out.human_masks, out.object_masks))
            sil = ref[3]  # the fit draw_layouts chose the layout by
            masks[layout, True].append((out.human_masks, fit_object_masks(out.human_masks, out.object_masks, sil)))

    result = {
        "data": args.data, "model": args.model, "layout": args.layout, "seed": args.seed,
        "positions": [args.skip, args.skip + args.n], "runs": [],
    }  # fmt: skip
    steps_list, margins = [int(v) for v in args.steps.split(",")], args.composite_margin
    runs = list(itertools.product(layouts, fits, steps_list, strengths, margins))
    for layout, fit, steps, strength, margin in runs:
        t0, outputs = time.perf_counter(), []
        label = f"{steps} steps" + ("" if args.layout == "gt" else f", object fit {'on' if fit else 'off'}")
        label += f", prior strength {strength[0]:g},{strength[1]:g}, background kept beyond {margin:g} px"
        if args.layout == "stage1":
            label += f", mask guidance {layout[0]:g}, {layout[1]} layout candidates, {layout[3]} stage-1 steps"
            label += "" if layout[2] is None else f", zoom {'on' if layout[2] else 'off'}"
        rows = zip(tqdm(requests, desc=f"stage 2, {label}"), refs, masks[layout, fit], strict=True)
        for r, ref, (hm, om) in rows:
            image = pipe.image_stage.renderer(
                *ref, r.text, [torch.Generator().manual_seed(request_seed(r))], layout_masks=(hm, om), box=r.box,
                background=r.background, num_inference_steps=steps, prior_strength=strength,
                composite_margin=margin / 128,
            )[0]  # fmt: skip
            outputs.append(MethodOutput(image, hm[0], om[0]))
        seconds = (time.perf_counter() - t0) / len(requests)
        row = score_method(outputs, samples, real_features, suite, cfg)
        row["stage2_s_per_image"], row["stage1_s_per_image"] = seconds, stage1_s.get(layout)
        run = {"steps": steps, "object_fit": fit, "prior_strength": list(strength), "composite_margin_px": margin}
        run |= {"mask_guidance": layout[0], "layout_candidates": layout[1], "zoom": layout[2], "mask_steps": layout[3]}
        result["runs"].append({**run, **row})
        ident, quality = row["identity"], row["quality"]
        print(
            f"{label}: acc {row['interaction_acc']:.1f}, mask acc {row.get('mask_acc', float('nan')):.1f}, "
            f"retrieval {ident['retrieval_human']:.1f} / "
            f"{ident['retrieval_object']:.1f}, FID {quality['fid']:.2f}, {seconds:.3f} s/image",
            flush=True,
        )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
