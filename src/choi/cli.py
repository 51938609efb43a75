"""The `choi` command line. Thin: it parses arguments and calls builders, pipelines and trainers.

Every user error (a :class:`~choi.errors.ChoiError`) becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from choi import __version__
from choi.cli_generate import add_app, add_generate, add_mask
from choi.cli_model import add_model
from choi.errors import ChoiError
from choi.launch import is_main_process, process_count

log = logging.getLogger("choi")
TINY_IMAGE_LR = 8e-4
SD_LR = 1e-5  # diffusers' ControlNet and IP-Adapter recipes train at 1e-5 .. 1e-4 on a pretrained base
TINY_MASK_LR = 5e-4
SD_MASK_LR = 1e-4  # a mask UNet from scratch: diffusers' from-scratch examples (train_unconditional) use 1e-4


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line and exit code 2 (argparse's own default code)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"choi: error: {message}\n")


def _add_data(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser(
        "data",
        help="build and inspect datasets",
        description="Build and inspect datasets.",
        epilog="example: choi data synth --out data/hoiw --n 1000 --split train",
    )
    dsub = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)

    synth = dsub.add_parser(
        "synth",
        help="render a HOI-World dataset into tar shards",
        description="Render a HOI-World dataset into tar shards. Re-running with the same arguments "
        "completes missing shards.",
        epilog="example: choi data synth --out data/hoiw --n 20000 --split train --seed 0 --workers 2",
    )
    synth.add_argument("--out", required=True, help="output dataset folder")
    synth.add_argument("--n", type=int, required=True, help="number of samples")
    synth.add_argument("--split", choices=("train", "test"), required=True)
    synth.add_argument("--seed", type=int, default=0, help="world seed: same seed, same samples")
    synth.add_argument("--resolution", type=int, default=128, choices=(64, 128, 256))
    synth.add_argument("--workers", type=int, default=1, help="parallel rendering processes")
    synth.add_argument("--shard-size", type=int, default=1000, help="samples per tar shard")
    synth.set_defaults(func=_data_synth)

    hico = dsub.add_parser(
        "hico",
        help="build a dataset from HICO-DET-format images and annotations",
        description="One sample per annotated interaction: person mask and keypoints from MediaPipe, object "
        "mask from GrabCut (or SAM), references cut from the same image. Bad items go to rejects.jsonl; "
        "re-running with the same arguments completes what is missing.",
        epilog="example: choi data hico --images hico/images/train2015 --annotations trainval_hico.json "
        "--out data/hico --workers 2",
    )
    hico.add_argument("--images", required=True, help="folder the annotations' file names are relative to")
    hico.add_argument("--annotations", required=True, help="HICO-DET JSON annotation file")
    _add_real_data_options(hico, shard_size=64)
    hico.set_defaults(func=_data_hico)

    video = dsub.add_parser(
        "video",
        help="build a dataset of different-pose pairs from a video of one human-object pair",
        description="Follows the person (MediaPipe) and the object (OpenCV tracker, or per-frame boxes) and "
        "mines pairs of frames far apart in time and pose: reference from one, target from the other. "
        "Boxes are normalised x1,y1,x2,y2 in [0, 1].",
        epilog="example: choi data video --video clip.mp4 --interaction 'ride bicycle' "
        "--first-boxes 0.1,0.2,0.4,0.9:0.05,0.5,0.6,0.95 --out data/video",
    )
    video.add_argument("--video", required=True, help="video file (anything FFmpeg decodes)")
    video.add_argument("--interaction", required=True, help="what the person does, e.g. 'ride bicycle'")
    video.add_argument("--object", default=None, help="object category (default: the interaction's object)")
    boxes = video.add_mutually_exclusive_group(required=True)
    boxes.add_argument("--first-boxes", help="PERSON:OBJECT boxes in the first frame, each x1,y1,x2,y2")
    boxes.add_argument("--boxes", help='JSON list of {"frame": i, "person": box, "object": box}')
    video.add_argument("--sample-fps", type=float, default=5.0, help="frames per second sampled (default: 5)")
    video.add_argument("--min-gap", type=float, default=1.0, help="least seconds between paired frames")
    video.add_argument("--min-pose-distance", type=float, default=0.03, help="least pose change of a pair")
    video.add_argument("--max-pairs", type=int, default=50, help="most pairs mined from the video")
    _add_real_data_options(video, shard_size=32)
    video.set_defaults(func=_data_video)

    preview = dsub.add_parser(
        "preview",
        help="write a contact sheet of a dataset",
        description="Contact sheet: target | human ref | object ref | masks | label, one row per sample.",
        epilog="example: choi data preview data/hoiw --out sheet.png --n 16",
    )
    preview.add_argument("dataset", help="dataset folder (with manifest.json)")
    preview.add_argument("--out", required=True, help="PNG file to write")
    preview.add_argument("--n", type=int, default=16, help="number of samples shown")
    preview.add_argument("--split", default=None, help="split to show (default: the first in the manifest)")
    preview.set_defaults(func=_data_preview)


def _data_synth(args: argparse.Namespace) -> None:
    from choi.data.synth import SynthConfig, build_synth

    cfg = SynthConfig(
        n=args.n, split=args.split, seed=args.seed, resolution=args.resolution, shard_size=args.shard_size
    )
    build_synth(args.out, cfg, workers=args.workers)


def _add_real_data_options(parser: argparse.ArgumentParser, shard_size: int) -> None:
    """Options `choi data hico` and `choi data video` share."""
    parser.add_argument("--out", required=True, help="output dataset folder")
    parser.add_argument("--split", choices=("train", "test"), default="train")
    parser.add_argument("--resolution", type=int, default=256, choices=(64, 128, 256, 512))
    parser.add_argument("--workers", type=int, default=1, help="parallel processes")
    parser.add_argument("--shard", default=None, help="i/N: build only this machine's part (e.g. 0/4)")
    parser.add_argument("--shard-size", type=int, default=shard_size, help="input items per tar shard")
    parser.add_argument("--sam-checkpoint", default=None, help="SAM weights for object masks (needs choi[sam])")
    parser.add_argument("--sam-model-type", default=None, help="vit_h, vit_l or vit_b (default: from the file name)")


def _data_hico(args: argparse.Namespace) -> None:
    from choi.data.hico import HicoConfig, build_hico

    cfg = HicoConfig(
        images=args.images,
        annotations=args.annotations,
        split=args.split,
        resolution=args.resolution,
        shard_size=args.shard_size,
        sam_checkpoint=args.sam_checkpoint,
        sam_model_type=args.sam_model_type,
    )
    build_hico(args.out, cfg, workers=args.workers, shard=args.shard)


def _data_video(args: argparse.Namespace) -> None:
    from choi.data.video import VideoConfig, build_video

    cfg = VideoConfig(
        video=args.video,
        interaction=args.interaction,
        object_category=args.object,
        first_boxes=args.first_boxes,
        boxes=args.boxes,
        sample_fps=args.sample_fps,
        min_gap=args.min_gap,
        min_pose_distance=args.min_pose_distance,
        max_pairs=args.max_pairs,
        split=args.split,
        resolution=args.resolution,
        shard_size=args.shard_size,
        sam_checkpoint=args.sam_checkpoint,
        sam_model_type=args.sam_model_type,
    )
    build_video(args.out, cfg, workers=args.workers, shard=args.shard)


def _data_preview(args: argparse.Namespace) -> None:
    from choi.data.preview import write_contact_sheet

    write_contact_sheet(args.dataset, args.out, n=args.n, split=args.split)


def _add_training_options(parser: argparse.ArgumentParser, steps: int, batch_size: int, lr: float) -> None:
    """Options every `choi train` command shares; the defaults are each model's own."""
    parser.add_argument("--data", required=True, help="dataset folder with a train split")
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--steps", type=int, default=steps, help=f"optimiser steps (default: {steps})")
    parser.add_argument("--batch-size", type=int, default=batch_size, help=f"samples per step (default: {batch_size})")
    parser.add_argument("--lr", type=float, default=lr, help=f"peak learning rate (default: {lr:g})")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers")
    parser.add_argument("--seed", type=int, default=0, help="seed for initialisation and data order")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")


def _add_stage_options(parser: argparse.ArgumentParser, stage: str) -> None:
    """Options of the two diffusion recipes, ``choi train mask`` and ``choi train image``."""
    parser.add_argument("--config", default="tiny", help="model preset: tiny (CPU) or small (GPU)")
    parser.add_argument("--validate-every", type=int, default=0, help="steps between validation grids (0: at the end)")
    parser.add_argument(
        "--init-from", default=None, metavar="MODEL", help=f"start from this {stage} model folder (fine-tuning)"
    )
    parser.add_argument(
        "--class-balance",
        type=float,
        default=0.0,
        help="loss weight per class ∝ its count^-B: 0 plain, 1 every class weighs the same (default: 0)",
    )


def _add_train(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser(
        "train",
        help="train models",
        description="Train choi's models and evaluators.",
        epilog="example: choi train mask --data data/hoiw --out runs/mask --steps 3000",
    )
    tsub = train.add_subparsers(dest="train_command", required=True, parser_class=_Parser)
    ev = tsub.add_parser(
        "evaluators",
        help="train the interaction recognizer, mask recognizer and identity embedder",
        description="Train the three evaluators on a HOI-World dataset (train split; the test split, when "
        "present, is used for validation). Each lands in OUT/<kind>/model; a killed run continues with --resume.",
        epilog="example: choi train evaluators --data data/hoiw --out runs/evaluators --steps 3000",
    )
    _add_training_options(ev, steps=3000, batch_size=64, lr=1e-3)
    ev.add_argument("--kinds", default="interaction,mask,identity", help="comma-separated evaluators to train")
    ev.add_argument(
        "--init-from",
        default=None,
        metavar="DIR",
        help="fine-tune from trained evaluators (a folder with <kind>/config.json, e.g. the shipped ones)",
    )
    ev.set_defaults(func=_train_evaluators)

    mask = tsub.add_parser(
        "mask",
        help="train the stage-1 mask generator",
        description="Train the interaction-aware mask generator on a HOI-World dataset (train split; the test "
        "split, when present, is used for validation grids). The final EMA weights land in OUT/model; "
        "a killed run continues with --resume.",
        epilog="example: choi train mask --data data/hoiw --out runs/mask --config tiny --steps 3000",
    )
    _add_training_options(mask, steps=3000, batch_size=32, lr=TINY_MASK_LR)
    _add_stage_options(mask, "mask")
    mask.set_defaults(lr=None, config=None)  # each family's own (--config: tiny, or sd with --family sd)
    mask.add_argument(
        "--zoom",
        type=float,
        default=0.0,
        metavar="P",
        help="fraction of samples cut to a window around their union box, for zoomed layouts (default: 0)",
    )
    mask.add_argument(
        "--sample-size",
        type=int,
        default=None,
        metavar="S",
        help="mask side to train at instead of the preset's 64; with --init-from, fine-tunes a model to it",
    )
    parts = "the frozen base (CLIP text encoder) and image encoder; a previous run's RUN/model: its stage 1 goes on"
    sd = _add_sd_options(mask, "stage 1: a mask UNet on your SD 1.x base's encoders", SD_MASK_LR, parts)
    sd.add_argument("--resolution", type=int, default=None, help="mask side in pixels (default: the preset's, 128)")
    mask.set_defaults(func=_train_stage)

    image = tsub.add_parser(
        "image",
        help="train the stage-2 image generator",
        description="Train the mask-guided, identity-preserving image generator on a HOI-World dataset (train "
        "split; the test split, when present, is used for validation grids). The same network learns the "
        "two-stage mode (masks) and the single-stage baseline mode (box only). The final EMA weights land in "
        "OUT/model; a killed run continues with --resume.",
        epilog="example: choi train image --data data/hoiw --out runs/image --config tiny --steps 6000",
    )
    _add_training_options(image, steps=6000, batch_size=16, lr=TINY_IMAGE_LR)
    _add_stage_options(image, "image")
    image.set_defaults(lr=None)  # each family's own: choi-tiny's 8e-4 would wreck a pretrained SD UNet's copy
    sd = _add_sd_options(image, "stage 2 on your SD 1.x weights", SD_LR, "the frozen base, IP-Adapter and image "
                         "encoder; a previous run's RUN/model: its adapter goes on")  # fmt: skip
    sd.add_argument("--resolution", type=int, default=512, help="training side in pixels (default: 512)")
    sd.add_argument("--lora-rank", type=int, default=0, help="also train a LoRA of this rank on the frozen UNet "
                    "(needs peft: pip install 'choi[train]'; default: 0, none)")  # fmt: skip
    sd.add_argument("--layout", default="controlnet", metavar="{controlnet,inpaint}",
                    help="how the masks and background enter: a ControlNet from the base UNet (default), or an "
                    "inpainting base's own channels (no ControlNet)")  # fmt: skip
    sd.add_argument("--identity-encoder", default=None, metavar="DIR", help="a local DINOv2 folder to embed the "
                    "references with (default: the IP-Adapter's CLIP image encoder)")  # fmt: skip
    sd.add_argument("--validate-samples", type=int, default=None, metavar="K", help="held-out samples generated "
                    "at each validation (default: 4; 0: no validation)")  # fmt: skip
    sd.add_argument("--validate-steps", type=int, default=None, metavar="S",
                    help="inference steps per validation image (default: 20)")  # fmt: skip
    image.set_defaults(func=_train_stage)


def _add_sd_options(parser: argparse.ArgumentParser, what: str, lr: float, parts: str) -> argparse._ArgumentGroup:
    """The ``--family sd`` group both ``choi train mask`` and ``choi train image`` have."""
    sd = parser.add_argument_group("--family sd", f"choi-sd: {what} (docs/training-sd.md)")
    sd.add_argument("--family", choices=("tiny", "sd"), default="tiny",
                    help=f"model family to train (default: tiny); sd's default --lr is {lr:g}")  # fmt: skip
    sd.add_argument("--model", default=None, metavar="MODEL", help=f"choi-sd model folder (`choi model sd`): {parts}")
    sd.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimiser step (default: 1)")
    sd.add_argument("--gradient-checkpointing", action="store_true", help="less memory, more time")
    sd.add_argument("--mixed-precision", choices=("auto", "no", "bf16", "fp16"), default="auto",
                    help="frozen parts in this dtype, trainables fp32 (default: auto, bf16 on CUDA)")  # fmt: skip
    return sd


def _written(what: str, folder: object) -> None:
    """One line per run, not one per process: under torchrun every rank returns from training."""
    if is_main_process():
        log.info("%s written to %s", what, folder)


def _train_stage(args: argparse.Namespace) -> None:
    """``choi train mask`` and ``choi train image``: the two diffusion recipes take the same options."""
    if args.family == "sd":
        _train_sd_mask(args) if args.train_command == "mask" else _train_sd_image(args)
        return
    mask = args.train_command == "mask"
    sd_only = {"--model": args.model is not None, "--resolution": mask and args.resolution is not None,
               "--validate-samples": getattr(args, "validate_samples", None) is not None,
               "--validate-steps": getattr(args, "validate_steps", None) is not None}  # fmt: skip
    if given := [flag for flag, set_ in sd_only.items() if set_]:
        raise ChoiError(f"{', '.join(given)}: only with --family sd")
    if args.lr is None:
        args.lr = TINY_MASK_LR if mask else TINY_IMAGE_LR
    args.config = args.config or "tiny"
    names = ("config", "steps", "batch_size", "lr", "workers", "seed", "resume", "validate_every", "class_balance")
    options = {k: getattr(args, k) for k in (*names, "init_from")}
    if args.train_command == "mask":
        from choi.training.mask import train_mask as recipe

        options.update(zoom=args.zoom, sample_size=args.sample_size)
    else:
        from choi.training.image import train_image as recipe
    final = recipe(args.data, args.out, **options)
    _written(f"{args.train_command} model", final)


def _train_sd_image(args: argparse.Namespace) -> None:
    """``choi train image --family sd``: the choi-tiny preset options do not apply."""
    from choi.training.sd import train_sd_image

    if args.model is None:
        raise ChoiError("--family sd needs --model MODEL, a choi-sd model folder (write one with `choi model sd`)")
    tiny_only = {"--config": args.config != "tiny", "--init-from": args.init_from is not None,
                 "--class-balance": args.class_balance != 0}  # fmt: skip
    if given := [flag for flag, set_ in tiny_only.items() if set_]:
        raise ChoiError(f"{', '.join(given)}: not available with --family sd yet")
    lr = SD_LR if args.lr is None else args.lr
    names = ("resolution", "steps", "batch_size", "workers", "seed", "resume", "grad_accum", "gradient_checkpointing",
             "mixed_precision", "lora_rank", "validate_every", "layout", "identity_encoder")  # fmt: skip
    options = {k: getattr(args, k) for k in names}
    validation = {k: getattr(args, k) for k in ("validate_samples", "validate_steps")}
    options.update({k: v for k, v in validation.items() if v is not None})
    final = train_sd_image(args.data, args.out, args.model, lr=lr, **options)
    _written("choi-sd stage-2 adapter", final)


def _train_sd_mask(args: argparse.Namespace) -> None:
    """``choi train mask --family sd``: choi-sd's stage 1 (docs/training-sd.md)."""
    from choi.training.sd_mask import train_sd_mask

    if args.model is None:
        raise ChoiError("--family sd needs --model MODEL, a choi-sd model folder (write one with `choi model sd`)")
    tiny_only = {"--init-from": args.init_from is not None, "--zoom": args.zoom != 0,
                 "--sample-size": args.sample_size is not None}  # fmt: skip
    if given := [flag for flag, set_ in tiny_only.items() if set_]:
        hint = " (--model RUN/model starts from a previous run; --resolution sets the mask side)"
        raise ChoiError(f"{', '.join(given)}: not available with --family sd{hint}")
    names = ("resolution", "steps", "batch_size", "workers", "seed", "resume", "validate_every", "class_balance",
             "grad_accum", "gradient_checkpointing", "mixed_precision")  # fmt: skip
    options = {k: getattr(args, k) for k in names}
    lr = SD_MASK_LR if args.lr is None else args.lr
    final = train_sd_mask(args.data, args.out, args.model, config=args.config or "sd", lr=lr, **options)
    _written("choi-sd stage-1 mask model", final)


def _train_evaluators(args: argparse.Namespace) -> None:
    from choi.training.evaluators import train_evaluators

    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    options = {k: getattr(args, k) for k in ("steps", "batch_size", "lr", "workers", "seed", "resume", "init_from")}
    train_evaluators(args.data, args.out, kinds=kinds, **options)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser(
        "eval",
        help="benchmark methods on a dataset's test split",
        description="Run every method on the same requests from the test split and write metrics.json and "
        "report.md. Outputs are cached in OUT/outputs: a re-run computes only what is missing. On real photos "
        "(choi data hico|video) choi's HOI-World evaluators are skipped; --dino/--clip and box adherence remain.",
        epilog="example: choi eval --data data/hoiw --methods gt,copy-paste --out reports/hoiw --n 500; "
        "choi eval --data data/hico --model my-sd --dino dinov2-base --clip clip-vit-large-patch14 --out reports/hico",
    )
    ev.add_argument("--data", required=True, help="dataset folder with a test split (HOI-World, hico or video)")
    ev.add_argument(
        "--methods",
        default=None,
        help="comma-separated methods (default: gt,choi-tiny,single-stage,gt-mask,copy-paste on HOI-World, "
        "gt,two-stage,copy-paste on real photos)",
    )
    ev.add_argument("--out", required=True, help="report folder")
    ev.add_argument("--n", type=int, default=500, help="number of requests")
    ev.add_argument("--seed", type=int, default=0, help="seed of the requests and of every method")
    ev.add_argument("--split", default="test", help="dataset split the requests come from")
    ev.add_argument("--evaluators", default=None, help="folder of trained evaluators (default: shipped ones)")
    ev.add_argument(
        "--model",
        default="choi-tiny",
        help="choi model the two-stage, choi-tiny, single-stage and gt-mask rows run: choi-tiny or a model folder "
        "(two-stage runs any family, choi-sd included; default: choi-tiny)",
    )
    ev.add_argument("--no-background", action="store_true", help="requests without the background")
    ev.add_argument("--no-box", action="store_true", help="requests without the union box")
    ev.add_argument("--dino", default=None, metavar="DIR", help="local DINOv2 folder: adds DINO-human/object/pair")
    ev.add_argument(
        "--clip", default=None, metavar="DIR", help="local CLIP folder: adds CLIP-I human/object/pair and CLIP-T"
    )
    ev.set_defaults(func=_eval)


def _eval(args: argparse.Namespace) -> None:
    from choi.evaluation.benchmark import EvalConfig, run_benchmark

    if args.n <= 0:
        raise ChoiError(f"--n must be positive, got {args.n}")
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip()) if args.methods else None
    if methods and "choi-sd" in methods and args.model in (None, "choi-tiny"):
        raise ChoiError("the choi-sd row runs --model: give a choi-sd model folder (`choi model sd ... --out DIR`)")
    cfg = EvalConfig(
        data=args.data,
        out=args.out,
        methods=methods,
        n=args.n,
        seed=args.seed,
        split=args.split,
        evaluators=args.evaluators,
        model=args.model,
        use_background=not args.no_background,
        use_box=not args.no_box,
        dino=args.dino,
        clip=args.clip,
    )
    report = run_benchmark(cfg)
    log.info("wrote %s/report.md and metrics.json (%d methods)", args.out, len(report["methods"]))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="choi",
        description="choi: generate an image of a given person interacting with a given object.",
        epilog="example: choi data synth --out data/hoiw --n 1000 --split train",
    )
    parser.add_argument("--version", action="version", version=f"choi {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    add_generate(sub)
    _add_data(sub)
    add_mask(sub)
    add_model(sub)
    _add_train(sub)
    _add_eval(sub)
    add_app(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        args.func(args)
    except ChoiError as err:
        print(f"choi: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("choi: interrupted", file=sys.stderr)
        return 130
    _end_distributed()
    return 0


def _end_distributed() -> None:
    """Tear down a ``torchrun``/``accelerate launch`` process group once the command has finished. Only on
    success: a rank that failed may leave the others inside a collective."""
    if "torch.distributed" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        log.debug("process group torn down")


def run() -> NoReturn:
    """The ``choi`` command and ``python -m choi``: :func:`main`, then exit with its code."""
    code = main()
    if process_count() > 1:
        # Launched as one of several processes. A model loaded through transformers keeps references to
        # the process group, so gloo's threads outlive destroy_process_group and the interpreter's own
        # exit then aborts (SIGABRT) about one run in eight with two CPU processes, after all the work is
        # written. Everything is flushed here; leave without that finalisation.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
