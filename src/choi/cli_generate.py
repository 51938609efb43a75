"""`choi generate`, `choi mask` and `choi app`: the request's fields as flags, one to one.

The flags are made from :class:`~choi.pipelines.request.GenerationRequest`'s fields, so the CLI, the
jobs file and the Python API cannot drift apart.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from choi.errors import ChoiError

log = logging.getLogger("choi")

# field → (argparse type, help); the order is the order of --help
REQUEST_FLAGS: dict[str, tuple[type, str]] = {
    "human": (str, "photo of the person"),
    "object": (str, "photo of the object"),
    "interaction": (str, "e.g. 'ride bicycle', 'a person kicking a ball'"),
    "background": (str, "scene image; the output takes its size"),
    "box": (str, "where the pair goes: normalised union box x1,y1,x2,y2 in [0, 1]"),
    "mask": (str, "layout PNG (person red, object blue), e.g. an edited mask_K_preview.png: skips stage 1"),
    "human_mask": (str, "the person's silhouette in the human photo (white = the person) instead of segmenting it"),
    "object_mask": (str, "the object's silhouette in the object photo (white = the object)"),
    "object_box": (str, "where the object is in the object photo: normalised x1,y1,x2,y2"),
    "sam_checkpoint": (str, "segment the object with SAM from these weights (needs the segment-anything package)"),
    "seed": (int, "image K uses seed+K (default: random, recorded)"),
    "num_images": (int, "candidates per request (default: 1)"),
    "mask_steps": (int, "stage-1 sampler steps (default: the model's)"),
    "mask_guidance": (float, "stage-1 guidance scale (default: the model's)"),
    "steps": (int, "stage-2 sampler steps (default: the model's)"),
    "guidance": (float, "stage-2 guidance scale (default: the model's)"),
    "max_output_side": (int, "longest output side; a larger background is scaled down (default: 4096)"),
}
STAGE2_FIELDS = ("steps", "guidance")

_EXAMPLES = """examples:
  choi generate --human me.png --object bike.png --interaction 'riding a bike' --num-images 4 --seed 0 --out out/
  choi generate --human me.png --object bike.png --interaction 'ride bicycle' --background park.jpg \\
      --box 0.3,0.2,0.9,0.95 --out out/
  choi generate ... --set layout_candidates=1 --set fit_object=false   # the model family's own options
  choi mask ... --out masks/ && choi generate ... --mask masks/mask_0_preview.png --out out/   # an edited mask
  choi generate --jobs requests.jsonl --out batch/

a jobs file has one JSON request per line, with the flags' names as keys (paths relative to the file):
  {"id": "bob-bike", "human": "bob.png", "object": "bike.png", "interaction": "ride bicycle", "seed": 3,
   "options": {"layout_candidates": 1}}
flags given on the command line (--seed, --steps, --set, ...) are defaults for every job."""


def _add_request_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    for name, (kind, text) in REQUEST_FLAGS.items():
        if name not in skip:
            parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None, help=text)
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", default=None,
                        help="an option of the model family (choi-tiny: fit_object, prior_strength, layout_candidates, "
                        "zoom, composite_margin, init_mask, strength); repeat for several")  # fmt: skip


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="choi-tiny", help="choi-tiny (shipped) or a model folder")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "mps"), help="where the model runs")
    dtypes = ("fp32", "fp16", "bf16", "float32", "float16", "bfloat16")
    parser.add_argument("--dtype", default="float32", choices=dtypes, help="model weights' dtype (fp16/bf16: GPUs)")
    parser.add_argument("--offload", action="store_true",
                        help="keep each model on the GPU only while it runs (choi-sd on small GPUs)")  # fmt: skip


def _request_values(args: argparse.Namespace, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    from choi.pipelines.stages import parse_set

    values = {k: getattr(args, k) for k in REQUEST_FLAGS if k not in skip and getattr(args, k) is not None}
    if args.set:
        values["options"] = parse_set(args.set)
    return values


def add_generate(sub: argparse._SubParsersAction) -> None:
    gen = sub.add_parser(
        "generate",
        help="generate images of a person interacting with an object (both stages)",
        description="Generate images of the given person interacting with the given object: stage 1 lays out\n"
        "the masks, stage 2 renders them. Writes image_K.png, mask_K_{human,object,preview}.png,\n"
        "reference_{human,object}.png (what the model got) and choi.json (every input, seed and setting)\n"
        "per request; choi.json last: it marks a request done.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_request_flags(gen)
    add_model_options(gen)
    gen.add_argument("--out", required=True, help="output folder (with --jobs: one subfolder per job)")
    gen.add_argument("--jobs", default=None, help="JSON Lines file of requests, instead of --human/--object/...")
    gen.set_defaults(func=_generate)


def _generate(args: argparse.Namespace) -> None:
    from choi.io import check_output_folder
    from choi.jobs import check_files, generate, load_pipeline, read_jobs, run_jobs
    from choi.pipelines.request import GenerationRequest

    values = _request_values(args)
    check_output_folder(args.out)  # before the model loads, as the inputs are
    if args.jobs is not None:
        given = [f"--{k}" for k in ("human", "object", "interaction", "background", "box", "mask") if k in values]
        if given:
            raise ChoiError(f"--jobs takes the requests from the file; drop {', '.join(given)}")
        summary = run_jobs(read_jobs(args.jobs, defaults=values), args.out,
                           lambda: load_pipeline(args.model, args.device, args.dtype, args.offload))  # fmt: skip
        if summary.failed and summary.reports:
            raise ChoiError(
                f"{len(summary.failed)} of {summary.total} jobs failed: {', '.join(i for i, _ in summary.failed)}"
            )
        return
    missing = [f"--{k}" for k in ("human", "object", "interaction") if k not in values]
    if missing:
        raise ChoiError(f"give {', '.join(missing)} (or --jobs FILE)")
    request = GenerationRequest.from_dict(values)
    check_files(request)  # before the model loads; the pipeline reads everything before it writes anything
    out = generate(load_pipeline(args.model, args.device, args.dtype, args.offload), request, args.out, progress=True)
    log.info("wrote %d image(s) to %s (seeds %s)", len(out.images), args.out, out.metadata["seeds"])


def add_mask(sub: argparse._SubParsersAction) -> None:
    mask = sub.add_parser(
        "mask",
        help="generate person/object masks for an interaction (stage 1 alone)",
        description="Generate where the person and the object go: per image mask_K_human.png, mask_K_object.png, "
        "a colour-coded mask_K_preview.png (person red, object blue), the reference cut-outs and choi.json. "
        "Edit a preview and give it to `choi generate --mask`.",
        epilog="examples:\n"
        "  choi mask --human me.png --object bike.png --interaction 'riding a bike' --seed 0 --out out/\n"
        "  choi mask ... --set init_mask=sketch.png --set strength=0.5   # choi-tiny: redraw a rough layout",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_request_flags(mask, skip=("mask", *STAGE2_FIELDS))
    add_model_options(mask)
    mask.add_argument("--out", required=True, help="output folder")
    mask.set_defaults(func=_mask)


def _mask(args: argparse.Namespace) -> None:
    from choi.io import check_output_folder
    from choi.jobs import check_files, load_pipeline
    from choi.pipelines.request import GenerationRequest

    request = GenerationRequest.from_dict(_request_values(args, skip=("mask", *STAGE2_FIELDS)))
    check_files(request)
    check_output_folder(args.out)
    out = load_pipeline(args.model, args.device, args.dtype, args.offload).generate_masks(request)
    out.save(args.out)
    log.info("wrote %d mask set(s) to %s (seeds %s)", len(out.human_masks), args.out, out.metadata["seeds"])


def add_app(sub: argparse._SubParsersAction) -> None:
    app = sub.add_parser(
        "app",
        help="start the web app",
        description="Start the web app (Gradio) on this machine. It binds to 127.0.0.1 unless --host says "
        "otherwise, and serves no file outside its outputs folder.",
        epilog="example: choi app --port 7860   # then open http://127.0.0.1:7860",
    )
    app.add_argument("--host", default="127.0.0.1", help="address to bind; 0.0.0.0 exposes the app to your network")
    app.add_argument("--port", type=int, default=7860, help="port to listen on (default: 7860)")
    app.add_argument("--outputs", default=None, help="folder for generated files (default: a new temporary folder)")
    app.add_argument("--keep-outputs-hours", type=float, default=24.0,
                     help="runs older than this are removed from the outputs folder, at start and at each "
                     "generation (default: 24)")  # fmt: skip
    add_model_options(app)
    app.set_defaults(func=_app)


def _app(args: argparse.Namespace) -> None:
    from choi.io import check_output_folder
    from choi.jobs import load_pipeline

    if not 0 < args.port < 65536:
        raise ChoiError(f"--port must be in [1, 65535], got {args.port}")
    if not 0 < args.keep_outputs_hours <= 24 * 365:  # NaN fails too
        raise ChoiError(f"--keep-outputs-hours must be in (0, 8760], got {args.keep_outputs_hours}")
    if args.outputs is not None:
        check_output_folder(args.outputs, "--outputs")
    try:
        from choi.app import launch
    except ImportError as err:
        raise ChoiError(f"the app needs gradio ({err}); install choi with its dependencies") from err
    pipe = load_pipeline(args.model, args.device, args.dtype, args.offload)
    launch(pipe, host=args.host, port=args.port, outputs=args.outputs, keep_outputs_hours=args.keep_outputs_hours)
