"""Finding and loading the Stable Diffusion weights a user has on disk, and the model folder that refers to them.

Everything loads with ``local_files_only=True``: nothing here may try the network. Each check raises
a one-line :class:`~choi.errors.ChoiError` that names the flag (``--base``, ``--ip-adapter``, ...) or
``model_index.json`` entry it is about and what was expected instead.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from choi.errors import ChoiError, quote
from choi.io import atomic_write_bytes, make_output_folder
from choi.quiet import quiet_loading

log = logging.getLogger(__name__)

FAMILY = "choi-sd"
DEFAULT_RESOLUTION = 512  # SD 1.x's training resolution
BASE_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
SD_FOLDER = "expected a diffusers Stable Diffusion folder"
CONVERT_HINT = (
    "convert it to a diffusers folder first: `python convert_original_stable_diffusion_to_diffusers.py "
    "--checkpoint_path FILE --dump_path DIR` (diffusers' scripts/), or in Python "
    "`StableDiffusionInpaintPipeline.from_single_file(FILE, config=LOCAL_SD_FOLDER).save_pretrained(DIR)`"
)


def check_base(path: str | Path, what: str = "--base") -> Path:
    """An SD 1.x diffusers folder (inpainting or plain) → its absolute path; the UNet's config is read."""
    from diffusers import UNet2DConditionModel

    folder = Path(path).expanduser()
    if folder.is_file() and folder.suffix in (".safetensors", ".ckpt", ".pt", ".bin"):
        raise ChoiError(f"{what}: {folder.name} is a single checkpoint file; {CONVERT_HINT}")
    if not folder.is_dir():
        raise ChoiError(f"{what}: {str(folder)[:200]} is not a folder: {SD_FOLDER}")
    for part in BASE_PARTS:
        if not (folder / part).is_dir():
            raise ChoiError(f"{what}: no {part}/ found: {SD_FOLDER}")
    try:
        unet = UNet2DConditionModel.load_config(folder, subfolder="unet", local_files_only=True)
    except (OSError, ValueError) as err:
        raise ChoiError(f"{what}: cannot read unet/config.json: {_first_line(err)}") from err
    if unet.get("addition_embed_type") == "text_time":
        raise ChoiError(f"{what}: this is an SDXL folder; choi-sd takes SD 1.x folders (plain or inpainting)")
    if unet.get("in_channels") not in (4, 9):
        raise ChoiError(f"{what}: the UNet takes {unet.get('in_channels')} input channels; choi-sd takes SD 1.x "
                        "UNets with 9 (inpainting) or 4 (plain)")  # fmt: skip
    return folder.resolve()


def check_ip_adapter(path: str | Path, what: str = "--ip-adapter") -> Path:
    """An IP-Adapter weights file (``ip-adapter_sd15.safetensors``) → its absolute path; its keys are checked."""
    from safetensors import safe_open

    file = Path(path).expanduser()
    if file.is_dir():
        raise ChoiError(f"{what}: {str(file)[:200]} is a folder; give the weights file, e.g. "
                        "models/ip-adapter_sd15.safetensors")  # fmt: skip
    if not file.is_file():
        raise ChoiError(f"{what}: {str(file)[:200]} not found")
    if file.suffix != ".safetensors":
        raise ChoiError(f"{what}: choi reads .safetensors only (never pickles); use ip-adapter_sd15.safetensors")
    try:
        with safe_open(str(file), framework="pt") as f:
            prefixes = {key.split(".", 1)[0] for key in f.keys()}  # noqa: SIM118 - a safetensors file handle, not a dict
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise ChoiError(f"{what}: cannot read {file.name}: {_first_line(err)}") from err
    if not {"image_proj", "ip_adapter"} <= prefixes:
        raise ChoiError(f"{what}: {file.name} has no image_proj.* and ip_adapter.* weights: not an IP-Adapter file")
    return file.resolve()


def check_image_encoder(path: str | Path | None, ip_adapter: Path, what: str = "--image-encoder") -> Path:
    """The IP-Adapter's CLIP image encoder folder; by default ``image_encoder/`` beside the weights file."""
    folder = Path(path).expanduser() if path is not None else ip_adapter.parent / "image_encoder"
    if not (folder / "config.json").is_file():
        hint = "" if path is not None else f" (looked beside the IP-Adapter file; give {what} DIR)"
        raise ChoiError(f"{what}: no CLIP image encoder in {str(folder)[:200]}{hint}: expected a "
                        "CLIPVisionModelWithProjection folder (config.json + model.safetensors)")  # fmt: skip
    return folder.resolve()


def load_identity_encoder(kind: str, path: Path, torch_dtype: torch.dtype = torch.float32,
                          what: str = "image encoder") -> tuple[torch.nn.Module, Any]:  # fmt: skip
    """The frozen encoder of the references and its preprocessing, for ``kind`` ``"clip"`` (the
    IP-Adapter's ``CLIPVisionModelWithProjection``; its processor is built for the encoder's own input
    size: the base's ``feature_extractor/`` is the safety checker's, which choi does not load) or
    ``"dinov2"`` (a ``Dinov2Model`` folder with its own processor, else DINOv2's evaluation transform)."""
    if kind == "dinov2":
        from choi.evaluation.foundation import load_dinov2

        try:
            model, processor = load_dinov2(path)
        except ChoiError as err:
            raise ChoiError(f"{what}: {err}") from None
        return model.to(torch_dtype).eval(), processor
    from transformers import CLIPVisionModelWithProjection

    try:
        encoder = CLIPVisionModelWithProjection.from_pretrained(path, dtype=torch_dtype, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as err:
        raise ChoiError(f"{what} {path}: cannot load it: {_first_line(err)}") from err
    return encoder, clip_processor(encoder)


def clip_processor(encoder: Any) -> Any:
    """The preprocessing of a CLIP image encoder, at the encoder's own input size."""
    from transformers import CLIPImageProcessor

    side = encoder.config.image_size
    return CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})


def check_stage1(value: str | Path, what: str = "--stage1") -> str:
    """``"choi-tiny"`` or a choi-tiny model folder (its ``mask/`` is stage 1) → what the index records."""
    if str(value) == "choi-tiny":
        return "choi-tiny"
    mask_folder(value, what)
    return str(Path(value).expanduser().resolve())


def mask_folder(value: str | Path, what: str = "stage1") -> Path:
    """The stage-1 mask model folder that ``value`` (``"choi-tiny"``, a choi-tiny model folder or a mask
    model folder itself, such as a ``choi train mask --family sd`` run's ``RUN/model``) names."""
    from choi.pipelines.tiny import shipped_weights

    folder = shipped_weights() if str(value) == "choi-tiny" else Path(value).expanduser()
    if _class_name(folder / "config.json") == "MaskGenerator":
        return folder
    sub = "mask"
    if (folder / "model_index.json").is_file():
        try:
            index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ChoiError(f"{what}: cannot read {folder / 'model_index.json'}: {err}") from err
        if index.get("family") != "choi-tiny":
            kind = f"a {quote(index['family'])} model" if "family" in index else "not a choi model folder"
            raise ChoiError(f"{what}: no mask model in {str(folder)[:200]} ({kind}): expected 'choi-tiny' or a "
                            "choi-tiny model folder")  # fmt: skip
        sub = index.get("components", {}).get("mask", "mask")
    if not (folder / sub / "config.json").is_file():
        raise ChoiError(f"{what}: no mask model in {str(folder)[:200]}: expected 'choi-tiny' or a choi-tiny "
                        "model folder (mask/ inside)")  # fmt: skip
    return folder / sub


def load_inpaint_pipeline(
    base: Path, ip_adapter: Path, image_encoder: Path, torch_dtype: torch.dtype, adapter: Path | None = None,
    identity_encoder: Path | None = None,
) -> Any:  # fmt: skip
    """diffusers' stock ``StableDiffusionInpaintPipeline`` with the IP-Adapter loaded twice: person, then object.

    With a trained ``adapter`` (``choi train image --family sd``), held as ``pipe.choi_adapter``: its
    person/object projections and attention processors in place of the IP-Adapter's, and its layout
    branch: ``StableDiffusionControlNetInpaintPipeline`` with its ControlNet, or (``layout="inpaint"``)
    the inpainting pipeline with its layout channels in the UNet's ``conv_in``. An adapter trained on
    DINOv2 runs with that encoder, ``identity_encoder``, in the pipeline's ``image_encoder`` slot.
    """
    with quiet_loading():
        return _load(base, ip_adapter, image_encoder, torch_dtype, adapter, identity_encoder)


def _load(
    base: Path, ip_adapter: Path, image_encoder: Path, torch_dtype: torch.dtype, adapter: Path | None,
    identity_encoder: Path | None,
) -> Any:  # fmt: skip
    from diffusers import StableDiffusionControlNetInpaintPipeline, StableDiffusionInpaintPipeline

    from choi.models.sd_adapter import SDAdapter

    trained, extra, cls = None, {}, StableDiffusionInpaintPipeline
    if adapter is not None:
        try:
            trained = SDAdapter.from_pretrained(adapter, torch_dtype=torch_dtype, local_files_only=True)
        except (OSError, ValueError, RuntimeError) as err:
            raise ChoiError(f"trained adapter {adapter}: cannot load it: {_first_line(err)}") from err
        if trained.controlnet is not None:
            extra, cls = {"controlnet": trained.controlnet}, StableDiffusionControlNetInpaintPipeline
    kind = "clip" if trained is None else trained.config.identity_encoder
    if kind == "dinov2" and identity_encoder is None:
        raise ChoiError(f"trained adapter {adapter} was trained on DINOv2: model_index.json must name its folder "
                        "as components.identity_encoder")  # fmt: skip
    path, what = (identity_encoder, "identity encoder") if kind == "dinov2" else (image_encoder, "image encoder")
    encoder, features = load_identity_encoder(kind, path, torch_dtype, what)
    try:
        pipe = cls.from_pretrained(
            base, image_encoder=encoder, feature_extractor=features, safety_checker=None,
            requires_safety_checker=False, dtype=torch_dtype, local_files_only=True, **extra,
        )  # fmt: skip
    except (OSError, ValueError, RuntimeError, TypeError) as err:
        raise ChoiError(f"base {base}: cannot load it: {_first_line(err)}") from err
    try:
        pipe.load_ip_adapter(str(ip_adapter.parent), subfolder="", weight_name=[ip_adapter.name] * 2,
                             image_encoder_folder=None, local_files_only=True)  # fmt: skip
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise ChoiError(f"IP-Adapter {ip_adapter.name} does not fit the base {base.name}: {_first_line(err)}") from err
    if trained is not None:  # the trained roles replace the IP-Adapter's, which set up the UNet's wiring
        pipe.unet.encoder_hid_proj.image_projection_layers = torch.nn.ModuleList(
            [trained.person_proj, trained.object_proj]
        )
        if trained.layout_channels is not None and pipe.unet.config.in_channels != 9:
            raise ChoiError(f"trained adapter {adapter} (layout inpaint) needs an inpainting base; {base.name} "
                            "has a plain UNet")  # fmt: skip
        try:
            trained.attach(pipe.unet)
        except (KeyError, ValueError) as err:
            raise ChoiError(f"trained adapter {adapter} was not trained on the base {base.name}") from err
    pipe.choi_adapter = trained  # None: zero-shot
    pipe.set_progress_bar_config(disable=True)  # choi reports progress through its own callback
    return pipe


def size_multiple(base: Path) -> int:
    """Sides must be multiples of this: the VAE's factor times the UNet's downsamplings (64 for SD 1.x)."""
    configs = [json.loads((base / part / "config.json").read_text(encoding="utf-8")) for part in ("vae", "unet")]
    return 2 ** (len(configs[0]["block_out_channels"]) - 1) * 2 ** (len(configs[1]["block_out_channels"]) - 1)


def check_resolution(resolution: Any, multiple: int, what: str = "--resolution") -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, int) or not multiple <= resolution <= 4096:
        raise ChoiError(f"{what} must be a whole number of pixels in [{multiple}, 4096], got {quote(resolution)}")
    if resolution % multiple:
        raise ChoiError(f"{what} must be a multiple of {multiple} for this base, got {resolution}")
    return resolution


def make_model_folder(
    out: str | Path, base: str | Path, ip_adapter: str | Path, image_encoder: str | Path | None = None,
    stage1: str | Path = "choi-tiny", resolution: int = DEFAULT_RESOLUTION,
) -> Path:  # fmt: skip
    """Check that each part loads, then write ``out/model_index.json`` referring to them by absolute path.

    Example:
        >>> make_model_folder("models/sd", "sd-v1-5-inpainting", "IP-Adapter/models/ip-adapter_sd15.safetensors")
    """
    base = check_base(base)
    ip_adapter = check_ip_adapter(ip_adapter)
    image_encoder = check_image_encoder(image_encoder, ip_adapter)
    stage1 = check_stage1(stage1)
    check_resolution(resolution, size_multiple(base))
    pipe = load_inpaint_pipeline(base, ip_adapter, image_encoder, torch.float32)
    components = {"base": base, "ip_adapter": ip_adapter, "image_encoder": image_encoder, "stage1": stage1}
    index = {
        "_class_name": "CHOIPipeline",
        "family": FAMILY,
        "components": {k: str(v) for k, v in components.items()},
        "resolution": resolution,
        "options": {},
    }
    folder = make_output_folder(out)
    atomic_write_bytes(folder / "model_index.json", (json.dumps(index, indent=2) + "\n").encode())
    log.info("wrote %s (%s UNet)", folder / "model_index.json", "inpainting" if pipe.unet.config.in_channels == 9
             else "plain")  # fmt: skip
    return folder


@dataclass(frozen=True)
class SDFolder:
    """What a choi-sd model folder's ``model_index.json`` names, checked, as absolute paths."""

    index: dict[str, Any]  # the file as read
    base: Path
    ip_adapter: Path
    image_encoder: Path
    adapter: Path | None  # a trained stage 2 (a run's RUN/model), else None
    stage1: str  # "choi-tiny" or the absolute path of its stage-1 folder
    identity_encoder: Path | None  # the DINOv2 folder a trained stage 2 embeds references with, else None


def read_sd_folder(folder: str | Path, what: str = "--model") -> SDFolder:
    """A choi-sd model folder given to training (``--model``), or a one-line error naming ``what``."""
    folder = Path(folder)
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise ChoiError(f"{what}: no model_index.json in {str(folder)[:200]}: expected a choi-sd model folder "
                        "(write one with `choi model sd`)")  # fmt: skip
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ChoiError(f"{what}: cannot read {index_file}: {err}") from err
    if not isinstance(index, dict) or index.get("family") != FAMILY:
        raise ChoiError(f"{what}: {folder} is not a choi-sd model folder (write one with `choi model sd`)")
    return sd_folder(folder, index)


def sd_folder(folder: Path, index: dict[str, Any]) -> SDFolder:
    """The parts a choi-sd ``model_index.json`` (``index``, read from ``folder``) names, each checked."""
    parts = index.get("components", {})
    missing = [k for k in ("base", "ip_adapter") if not isinstance(parts.get(k), str)]
    if missing:
        raise ChoiError(f"{folder}/model_index.json lacks components {', '.join(missing)}; rerun `choi model sd`")
    what = f"{folder.name}/model_index.json"
    ip_adapter = check_ip_adapter(folder / parts["ip_adapter"], f"{what} ip_adapter")
    encoder = parts.get("image_encoder")
    adapter, stage1, identity = parts.get("adapter"), parts.get("stage1", "choi-tiny"), parts.get("identity_encoder")
    return SDFolder(
        index=index,
        base=check_base(folder / parts["base"], f"{what} base"),
        ip_adapter=ip_adapter,
        image_encoder=check_image_encoder(
            None if encoder is None else folder / encoder, ip_adapter, f"{what} image_encoder"
        ),  # fmt: skip
        adapter=None if adapter is None else (folder / adapter).resolve(),
        stage1=stage1 if stage1 == "choi-tiny" else str((folder / stage1).resolve()),
        identity_encoder=None if identity is None else (folder / identity).resolve(),
    )


def _class_name(config: Path) -> str | None:
    """The ``_class_name`` a diffusers ``config.json`` records (None when it is missing or unreadable)."""
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("_class_name")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
