"""Stage 1 (mask generator) benchmark: CPU time per mask and, with data + evaluators, mask quality.

Usage:
    python benchmarks/bench_mask.py [--model RUN/model | --untrained] [--threads 2] [--runs 7]
    python benchmarks/bench_mask.py --model RUN/model --data data/hoiw --evaluators EVAL_DIR [--n 200]
    python benchmarks/bench_mask.py --data data/hoiw --evaluators EVAL_DIR --skip-speed --skip-quality --redraw 0.25 0.5

Speed: one mask (num_images=1) at the pipeline's default settings (steps, guidance), median of
``--runs`` after a warm-up, on ``--threads`` CPU threads; also at 20 steps. CPU time is reported
next to wall time: on a shared machine wall time also counts other processes' turns.

Quality (``--data`` and ``--evaluators``), on the first ``--n`` requests of the test split
(unseen identities; references segmented from their photos unless ``--gt-refs``):
- mask-only recognizer accuracy on generated masks (ground-truth masks give the ceiling), all /
  rare / non-rare classes;
- box adherence: IoU of the generated union box with the requested box;
- interaction control: same references and seed, every interaction defined for the object →
  fraction recognised as the requested one;
- seed diversity: 1 - mean pairwise IoU of the union masks over ``--seeds`` seeds, and the
  fraction of those layouts recognised as the requested interaction.

Redrawing (``--redraw S ...``, with ``--data`` and ``--evaluators``): each request's true masks
replaced by a sketch (each role an ellipse of its mask's mean and spread, the object drawn over the
person), redrawn by stage 1 from each strength S (``init_masks``): IoU of the sketch and of the
redraws with the true human and object masks, and the mask recognizer's accuracy on each.
Writes a JSON report with ``--out``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from choi.data.shards import iter_samples
from choi.evaluation.metrics import box_iou, union_box_from_masks
from choi.io import atomic_write_text
from choi.models.mask_generator import MaskGenerator
from choi.pipelines.tiny.mask import DEFAULT_GUIDANCE, DEFAULT_STEPS, MaskPipeline
from choi.vocabulary import BY_NAME, classes_for_object


def _synthetic_refs(size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:size, :size] / size
    human = ((xx - 0.5) ** 2 / 0.01 + (yy - 0.55) ** 2 / 0.14 < 1) | ((xx - 0.5) ** 2 + (yy - 0.12) ** 2 < 0.006)
    obj = ((xx - 0.3) ** 2 + (yy - 0.7) ** 2 < 0.03) | ((xx - 0.7) ** 2 + (yy - 0.7) ** 2 < 0.03)
    return human, obj


def _load(args: argparse.Namespace) -> MaskPipeline:
    if args.untrained:
        torch.manual_seed(0)
        return MaskPipeline(MaskGenerator.from_preset(args.config), model_id=f"untrained-{args.config}")
    return MaskPipeline.from_pretrained(args.model)


def bench_speed(pipe: MaskPipeline, args: argparse.Namespace) -> dict[str, float]:
    human, obj = _synthetic_refs()
    results = {}
    for steps in dict.fromkeys([args.steps, 20]):
        request = dict(human_mask=human, object_mask=obj, interaction="ride bicycle", box=(0.2, 0.2, 0.9, 0.95))
        for i in range(2):  # warm-up: lazy init, allocator, text cache
            pipe(**request, seed=i, num_inference_steps=steps, guidance_scale=args.guidance)
        wall, cpu = [], []
        for i in range(args.runs):
            w, c = time.perf_counter(), time.process_time()
            pipe(**request, seed=100 + i, num_inference_steps=steps, guidance_scale=args.guidance)
            wall.append(time.perf_counter() - w)
            cpu.append(time.process_time() - c)
        results[f"s_per_mask_{steps}_steps"] = statistics.median(wall)
        results[f"s_per_mask_{steps}_steps_min"] = min(wall)
        results[f"cpu_s_per_mask_{steps}_steps"] = statistics.median(cpu)
        print(
            f"stage 1: {statistics.median(wall):.3f} s/mask (min {min(wall):.3f}, CPU {statistics.median(cpu):.3f} s) "
            f"at {steps} steps, guidance {args.guidance}, {args.threads} threads, {args.runs} runs"
        )
    return results


def _union_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def bench_quality(pipe: MaskPipeline, args: argparse.Namespace) -> dict[str, float]:
    from choi.evaluation.evaluators import EvaluatorSuite

    suite = EvaluatorSuite.load(args.evaluators)
    samples = list(iter_samples(args.data, split=args.split, limit=args.n))
    gen_h, gen_o, labels, box_scores = [], [], [], []
    control_hits, control_total = 0, 0
    diversity, valid = [], []
    for i, s in enumerate(samples):
        refs = (
            {"human_mask": s.human_ref_mask, "object_mask": s.object_ref_mask}
            if args.gt_refs
            else {"human": s.human_ref, "object": s.object_ref}
        )
        common = dict(**refs, num_inference_steps=args.steps, guidance_scale=args.guidance)
        h, w = s.resolution
        box = None if args.no_box else s.union_box
        background = None if args.no_background else s.background
        out = pipe(interaction=s.text, box=box, background=background, seed=i, height=h, width=w, **common)
        gen_h.append(out.human_masks[0])
        gen_o.append(out.object_masks[0])
        labels.append(BY_NAME[s.interaction].index)
        if box is not None:
            box_scores.append(float(box_iou(union_box_from_masks(gen_h[-1], gen_o[-1]), box)) / 100)
        if i < args.control_n:  # every interaction of this object, same references and seed
            classes = classes_for_object(s.object_category)
            masks = [pipe(interaction=c.phrase(), seed=i, height=h, width=w, **common) for c in classes]
            probs = suite.classify_masks(
                np.stack([m.human_masks[0] for m in masks]), np.stack([m.object_masks[0] for m in masks])
            )
            control_hits += int(sum(p.argmax() == c.index for p, c in zip(probs, classes, strict=True)))
            control_total += len(classes)
        if i < args.diversity_n:
            many = pipe(interaction=s.text, num_images=args.seeds, seed=1000 * i, height=h, width=w, **common)
            unions = [hm | om for hm, om in zip(many.human_masks, many.object_masks, strict=True)]
            pairs = [_union_iou(a, b) for a, b in itertools.combinations(unions, 2)]
            diversity.append(1 - float(np.mean(pairs)) if pairs else 0.0)
            probs = suite.classify_masks(many.human_masks, many.object_masks)
            valid.append(float((probs.argmax(-1) == labels[-1]).mean()))
    labels_a = np.array(labels)
    pred = suite.classify_masks(np.stack(gen_h), np.stack(gen_o)).argmax(-1)
    gt_h, gt_o = np.stack([s.human_mask for s in samples]), np.stack([s.object_mask for s in samples])
    ceiling = suite.classify_masks(gt_h, gt_o)
    rare = np.array([BY_NAME[s.interaction].rare for s in samples])
    result = {
        "n": len(samples),
        "mask_recognizer_acc": float((pred == labels_a).mean()),
        "mask_recognizer_acc_rare": float((pred == labels_a)[rare].mean()) if rare.any() else float("nan"),
        "mask_recognizer_acc_nonrare": float((pred == labels_a)[~rare].mean()) if (~rare).any() else float("nan"),
        "mask_recognizer_acc_gt_masks": float((ceiling.argmax(-1) == labels_a).mean()),
        "box_iou": float(np.mean(box_scores)) if box_scores else None,
        "box_iou_at_least_0.8": float(np.mean(np.array(box_scores) >= 0.8)) if box_scores else None,
        "interaction_control_acc": control_hits / control_total if control_total else None,
        "seed_diversity": float(np.mean(diversity)) if diversity else None,
        "seed_layouts_recognised": float(np.mean(valid)) if valid else None,
    }
    for k, v in result.items():
        print(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}")
    return result


def sketch_of(mask: np.ndarray) -> np.ndarray:
    """The ellipse a hand would draw for ``mask``: its pixels' mean and covariance (Mahalanobis d² < 4)."""
    yx = np.argwhere(mask).astype(np.float64)
    if len(yx) < 3:
        return mask.copy()
    d = yx.mean(0)
    cov = np.cov(yx.T) + np.eye(2) * 0.25
    grid = np.stack(np.mgrid[: mask.shape[0], : mask.shape[1]], -1) - d
    return np.einsum("...i,ij,...j->...", grid, np.linalg.inv(cov), grid) < 4


def bench_redraw(pipe: MaskPipeline, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    from choi.evaluation.evaluators import EvaluatorSuite

    suite = EvaluatorSuite.load(args.evaluators)
    samples = list(iter_samples(args.data, split=args.split, limit=args.n))
    labels = np.array([BY_NAME[s.interaction].index for s in samples])
    sketches = []
    for s in samples:
        obj = sketch_of(s.object_mask)
        sketches.append((sketch_of(s.human_mask) & ~obj, obj))
    drawn: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"sketch": sketches}
    for strength in args.redraw:
        rows = drawn.setdefault(f"strength {strength}", [])
        for i, (s, init) in enumerate(zip(samples, sketches, strict=True)):
            h, w = s.resolution
            out = pipe(
                human=s.human_ref, object=s.object_ref, interaction=s.text, box=s.union_box, background=s.background,
                seed=i, height=h, width=w, num_inference_steps=args.steps, guidance_scale=args.guidance,
                init_masks=init, strength=strength,
            )  # fmt: skip
            rows.append((out.human_masks[0], out.object_masks[0]))
    result = {}
    for name, rows in drawn.items():
        human, obj = np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])
        pred = suite.classify_masks(human, obj).argmax(-1)
        result[name] = {
            "iou_human": float(np.mean([_union_iou(a, s.human_mask) for a, s in zip(human, samples, strict=True)])),
            "iou_object": float(np.mean([_union_iou(a, s.object_mask) for a, s in zip(obj, samples, strict=True)])),
            "mask_recognizer_acc": float((pred == labels).mean()),
        }
        print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in result[name].items()))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="mask model folder (default: the shipped weights)")
    parser.add_argument("--untrained", action="store_true", help="a randomly initialised model (speed only)")
    parser.add_argument("--config", default="tiny", help="preset for --untrained")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE)
    parser.add_argument("--data", default=None, help="dataset folder with a test split (quality metrics)")
    parser.add_argument("--evaluators", default=None, help="folder of trained evaluators (quality metrics)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--n", type=int, default=200, help="requests for the quality metrics")
    parser.add_argument("--control-n", type=int, default=50, help="requests for the interaction-control check")
    parser.add_argument("--diversity-n", type=int, default=50, help="requests for the seed-diversity check")
    parser.add_argument("--seeds", type=int, default=4, help="seeds per request for diversity")
    parser.add_argument("--gt-refs", action="store_true", help="use the dataset's reference silhouettes")
    parser.add_argument("--no-box", action="store_true")
    parser.add_argument("--no-background", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--redraw", type=float, nargs="*", default=None, help="redraw sketches from these strengths")
    parser.add_argument("--skip-quality", action="store_true", help="with --redraw: only the redraw figures")
    parser.add_argument("--out", default=None, help="JSON report to write")
    args = parser.parse_args()
    if bool(args.data) != bool(args.evaluators):
        parser.error("quality metrics need both --data and --evaluators")
    torch.set_num_threads(args.threads)

    pipe = _load(args)
    report: dict = {"model": {"id": pipe.model_id, "version": pipe.model_version}, "threads": args.threads}
    report["settings"] = {"steps": args.steps, "guidance": args.guidance}
    if not args.skip_speed:
        report["speed"] = bench_speed(pipe, args)
    if args.data and args.evaluators and not args.skip_quality:
        report["quality"] = bench_quality(pipe, args)
    if args.redraw and args.data and args.evaluators:
        report["redraw"] = bench_redraw(pipe, args)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
