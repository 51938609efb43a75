"""`choi model`: make a choi model folder from weights the user already has (no copying, no downloads)."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger("choi")


def add_model(sub: argparse._SubParsersAction) -> None:
    model = sub.add_parser(
        "model",
        help="make a model folder from weights you have (e.g. Stable Diffusion)",
        description="Make a choi model folder that refers to weights you already have on disk.",
        epilog="example: choi model sd --base sd-v1-5-inpainting "
        "--ip-adapter IP-Adapter/models/ip-adapter_sd15.safetensors --out models/sd",
    )
    msub = model.add_subparsers(dest="model_command", required=True, parser_class=type(model))
    sd = msub.add_parser(
        "sd",
        help="choi-sd: choi's stage 1 + Stable Diffusion 1.x inpainting with two IP-Adapters (zero-shot)",
        description="Write MODEL/model_index.json (family choi-sd) referring to your Stable Diffusion 1.x\n"
        "diffusers folder (inpainting or plain), IP-Adapter SD1.5 weights and their CLIP image encoder, by\n"
        "absolute path, after checking that each loads. Nothing is copied or downloaded. See docs/choi-sd.md.",
        epilog="example:\n  choi model sd --base stable-diffusion-inpainting "
        "--ip-adapter IP-Adapter/models/ip-adapter_sd15.safetensors --out models/sd\n"
        "  choi generate --model models/sd --human me.jpg --object bike.jpg --interaction 'riding a bicycle' "
        "--device cuda --dtype fp16 --out out/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sd.add_argument("--base", required=True, help="a diffusers Stable Diffusion 1.x folder (unet/, vae/, ...)")
    sd.add_argument("--ip-adapter", required=True, help="IP-Adapter weights, e.g. models/ip-adapter_sd15.safetensors")
    sd.add_argument(
        "--image-encoder", default=None, help="its CLIP image encoder folder (default: image_encoder/ beside the file)"
    )
    sd.add_argument(
        "--stage1",
        default="choi-tiny",
        help="stage 1: choi-tiny (shipped), a choi-tiny model folder "
        "or a mask model folder (a `choi train mask --family sd` run's RUN/model)",
    )
    sd.add_argument("--resolution", type=int, default=512, help="output side without a background (default 512)")
    sd.add_argument("--out", required=True, help="the model folder to write (MODEL/model_index.json)")
    sd.set_defaults(func=_model_sd)


def _model_sd(args: argparse.Namespace) -> None:
    from choi.pipelines.sd import make_model_folder

    folder = make_model_folder(
        args.out, args.base, args.ip_adapter, args.image_encoder, stage1=args.stage1, resolution=args.resolution
    )
    log.info("use it: choi generate --model %s --human ... --object ... --interaction ... --out DIR", folder)
