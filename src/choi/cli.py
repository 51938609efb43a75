"""The `choi` command line. Thin: it parses arguments and calls builders, pipelines and trainers.

Every user error (a :class:`~choi.errors.ChoiError`) becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from choi import __version__
from choi.errors import ChoiError

log = logging.getLogger("choi")


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line and exit code 2 (argparse's own default code)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"choi: error: {message}\n")


def _add_data(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="build and inspect datasets", description="Build and inspect datasets.")
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
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--resolution", type=int, default=128, choices=(64, 128, 256))
    synth.add_argument("--workers", type=int, default=1, help="parallel rendering processes")
    synth.add_argument("--shard-size", type=int, default=1000, help="samples per tar shard")
    synth.set_defaults(func=_data_synth)

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


def _data_preview(args: argparse.Namespace) -> None:
    from choi.data.preview import write_contact_sheet

    write_contact_sheet(args.dataset, args.out, n=args.n, split=args.split)


def _add_training_options(parser: argparse.ArgumentParser, steps: int, batch_size: int, lr: float) -> None:
    """Options every `choi train` command shares; the defaults are each model's own."""
    parser.add_argument("--data", required=True, help="dataset folder with a train split")
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")


def _add_train(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train models", description="Train choi's models and evaluators.")
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
    ev.set_defaults(func=_train_evaluators)

    mask = tsub.add_parser(
        "mask",
        help="train the stage-1 mask generator",
        description="Train the interaction-aware mask generator on a HOI-World dataset (train split; the test "
        "split, when present, is used for validation grids). The final EMA weights land in OUT/model; "
        "a killed run continues with --resume.",
        epilog="example: choi train mask --data data/hoiw --out runs/mask --config tiny --steps 3000",
    )
    _add_training_options(mask, steps=3000, batch_size=32, lr=5e-4)
    mask.add_argument("--config", default="tiny", help="model preset: tiny (CPU) or small (GPU)")
    mask.add_argument("--validate-every", type=int, default=0, help="steps between validation grids (0: at the end)")
    mask.set_defaults(func=_train_mask)


def _train_mask(args: argparse.Namespace) -> None:
    from choi.training.mask import train_mask

    final = train_mask(
        args.data,
        args.out,
        config=args.config,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        workers=args.workers,
        seed=args.seed,
        resume=args.resume,
        validate_every=args.validate_every,
    )
    log.info("mask model written to %s", final)


def _train_evaluators(args: argparse.Namespace) -> None:
    from choi.training.evaluators import train_evaluators

    train_evaluators(
        args.data,
        args.out,
        kinds=tuple(k.strip() for k in args.kinds.split(",") if k.strip()),
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        workers=args.workers,
        seed=args.seed,
        resume=args.resume,
    )


def _add_mask(sub: argparse._SubParsersAction) -> None:
    from choi.pipelines.mask import DEFAULT_GUIDANCE, DEFAULT_STEPS

    mask = sub.add_parser(
        "mask",
        help="generate human/object masks for an interaction (stage 1)",
        description="Generate where the person and the object go: per image, mask_K_human.png, "
        "mask_K_object.png, a colour-coded mask_K_preview.png (human red, object blue) and mask.json.",
        epilog="example: choi mask --human me.png --object bike.png --interaction 'riding a bike' --seed 0 --out out/",
    )
    mask.add_argument("--human", required=True, help="photo of the person on a plain background")
    mask.add_argument("--object", required=True, help="photo of the object on a plain background")
    mask.add_argument("--interaction", required=True, help="e.g. 'ride bicycle', 'a person kicking a ball'")
    mask.add_argument("--background", default=None, help="scene image; the masks take its size")
    mask.add_argument("--box", default=None, help="normalised union box x1,y1,x2,y2 in [0, 1]")
    mask.add_argument("--seed", type=int, default=None, help="image K uses seed+K (default: random, recorded)")
    mask.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="sampler steps")
    mask.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE, help="classifier-free guidance scale")
    mask.add_argument("--num-images", type=int, default=1)
    mask.add_argument("--model", default=None, help="mask model folder (default: the shipped choi-tiny weights)")
    mask.add_argument("--out", required=True, help="output folder")
    mask.set_defaults(func=_mask)


def _mask(args: argparse.Namespace) -> None:
    from choi.data.segment import load_image
    from choi.pipelines.mask import MaskPipeline, parse_box
    from choi.vocabulary import resolve

    # Every input is checked before the model loads or anything is written.
    resolve(args.interaction)
    box = parse_box(args.box) if args.box is not None else None
    human = load_image(args.human, "human image")
    obj = load_image(args.object, "object image")
    background = load_image(args.background, "background image") if args.background is not None else None
    if args.num_images < 1:
        raise ChoiError(f"--num-images must be positive, got {args.num_images}")
    pipe = MaskPipeline.from_pretrained(args.model)
    out = pipe(
        human=human,
        object=obj,
        interaction=args.interaction,
        background=background,
        box=box,
        num_images=args.num_images,
        seed=args.seed,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
    )
    inputs = {"human": args.human, "object": args.object, "background": args.background, "box": args.box}
    out.save(args.out, inputs=inputs)
    log.info("wrote %d mask set(s) to %s (seeds %s)", args.num_images, args.out, out.metadata["seeds"])


def _add_eval(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser(
        "eval",
        help="benchmark methods on HOI-World's test split",
        description="Run every method on the same requests from the test split and write metrics.json and "
        "report.md. Outputs are cached in OUT/outputs: a re-run computes only what is missing.",
        epilog="example: choi eval --data data/hoiw --methods gt,copy-paste --out reports/hoiw --n 500",
    )
    ev.add_argument("--data", required=True, help="dataset folder with a test split")
    ev.add_argument("--methods", default="gt,choi-tiny,single-stage,gt-mask,copy-paste")
    ev.add_argument("--out", required=True, help="report folder")
    ev.add_argument("--n", type=int, default=500, help="number of requests")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--split", default="test")
    ev.add_argument("--evaluators", default=None, help="folder of trained evaluators (default: shipped ones)")
    ev.add_argument("--no-background", action="store_true", help="requests without the background")
    ev.add_argument("--no-box", action="store_true", help="requests without the union box")
    ev.set_defaults(func=_eval)


def _eval(args: argparse.Namespace) -> None:
    from choi.evaluation.benchmark import EvalConfig, run_benchmark

    if args.n <= 0:
        raise ChoiError(f"--n must be positive, got {args.n}")
    cfg = EvalConfig(
        data=args.data,
        out=args.out,
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
        n=args.n,
        seed=args.seed,
        split=args.split,
        evaluators=args.evaluators,
        use_background=not args.no_background,
        use_box=not args.no_box,
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
    _add_data(sub)
    _add_mask(sub)
    _add_train(sub)
    _add_eval(sub)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
