"""The end-to-end CHOI pipeline: references + interaction (+ background, box) → images and masks.

Stage 1 draws where the person and the object go and how they touch; stage 2 paints *these*
identities inside those masks. A user layout skips stage 1. The two stages come from the model
folder's family (``model_index.json``; :mod:`choi.pipelines.stages` is the seam), so the same
request, outputs and front ends serve every family.

Example:
    >>> pipe = CHOIPipeline.from_pretrained("choi-tiny")  # shipped weights, offline
    >>> out = pipe(human="examples/kick_ball_human.png", object="examples/ride_bicycle_object.png",
    ...            interaction="ride bicycle", seed=0, num_images=2)
    >>> out.save("outputs/ride")  # image_K.png, mask_K_*.png, reference_*.png, choi.json
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from choi import __version__
from choi.data.segment import downscale, rgba_cutout, same_aspect
from choi.errors import ChoiError, quote
from choi.io import atomic_write_bytes, make_output_folder, png_bytes
from choi.pipelines import tiny
from choi.pipelines.inputs import (
    fit_side,
    given_size,
    mask_preview,
    read_background,
    read_layout_mask,
    resize_masks,
    segment,
    upscale_onto,
)
from choi.pipelines.request import GenerationRequest
from choi.pipelines.sampling import make_generators
from choi.pipelines.stages import Callback, ImageStage, Layouts, MaskStage, StageInputs, parse_options


# family name → loader(folder, index, model_id, torch_dtype) → (mask stage, image stage, options class)
def _load_sd(*args: Any) -> tuple[MaskStage, ImageStage, type]:
    from choi.pipelines import sd  # imported when used: diffusers' SD pipelines cost ~1.5 s of every start

    return sd.load(*args)


FAMILIES: dict[str, Callable[..., tuple[MaskStage, ImageStage, type]]] = {tiny.FAMILY: tiny.load, "choi-sd": _load_sd}
INDEX_FILE = "model_index.json"
# The stages draw at most this long (or the family's own size, if larger); only the final composite
# touches the output's pixels, so a phone photo costs little more than a 1 MP one (docs/real-photos.md).
WORK_SIDE = 1024
PREVIEW_MAX_SIDE = 1024  # mask_K_preview.png of a bigger output is shrunk to this (the masks stay full size)

log = logging.getLogger(__name__)


def read_model_index(folder: Path) -> dict[str, Any]:
    """A model folder's ``model_index.json``; a folder from before it (``mask/`` + ``image/``) is choi-tiny."""
    path = folder / INDEX_FILE
    if not path.is_file():
        if (folder / "mask").is_dir() and (folder / "image").is_dir():
            return {"family": tiny.FAMILY, "components": {"mask": "mask", "image": "image"}}
        # One stage from `choi train mask|image` (RUN/model): completed with the shipped choi-tiny's other stage.
        trained = _class_name(folder / "config.json")
        shipped = tiny.shipped_weights()
        if trained == "MaskGenerator":
            return {"family": tiny.FAMILY, "components": {"mask": str(folder), "image": str(shipped / "image")}}
        if trained == "ImageGenerator":
            return {"family": tiny.FAMILY, "components": {"mask": str(shipped / "mask"), "image": str(folder)}}
        raise ChoiError(f"no {INDEX_FILE} in {folder}: expected a choi model folder (e.g. from `choi model`)")
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ChoiError(f"cannot read {path}: {err}") from err
    if not isinstance(index, dict) or index.get("family") not in FAMILIES:
        family = index.get("family") if isinstance(index, dict) else None
        raise ChoiError(f"{path}: unknown model family {family!r}; choi knows {', '.join(FAMILIES)}")
    return index


def _class_name(config: Path) -> str | None:
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("_class_name")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None


@dataclass
class _Read:
    """A request read once for both stages: what they get, plus what only the pipeline keeps."""

    inputs: StageInputs  # at the working size
    options: Any  # the family's options
    metadata: dict[str, Any]  # what choi.json records of the request
    layout: tuple[np.ndarray, np.ndarray] | None  # the user's layout, decoded, at its own size
    background: np.ndarray | None  # at the output size, for the final composite


@dataclass
class CHOIOutput:
    """K generated images, their masks, the references as the model got them, and how to reproduce them."""

    images: list[np.ndarray]  # (H, W, 3) uint8 each; empty for stage 1 alone
    human_masks: np.ndarray  # (K, H, W) bool
    object_masks: np.ndarray
    metadata: dict[str, Any]
    references: dict[str, np.ndarray]  # "human" / "object" → (h, w, 4) uint8 RGBA cut-outs
    background: np.ndarray | None = None

    def mask_preview(self, k: int) -> np.ndarray:
        return mask_preview(self.human_masks[k], self.object_masks[k], self.background, PREVIEW_MAX_SIDE)

    preview = mask_preview  # the app's and stage 1's name

    def save(self, out_dir: str | os.PathLike) -> list[Path]:
        """Write ``image_K.png``, ``mask_K_{human,object,preview}.png``, ``reference_{human,object}.png``,
        then ``choi.json`` last, each atomically (a folder with ``choi.json`` is complete)."""
        try:
            return self._save(make_output_folder(out_dir))
        except OSError as err:  # a full disk, a folder made read-only meanwhile: one line, not a traceback
            raise ChoiError(f"cannot write the outputs to {quote(Path(out_dir))}: {err.strerror or err}") from err

    def _save(self, out: Path) -> list[Path]:
        written, records = [], []
        for role, cutout in self.references.items():
            atomic_write_bytes(out / f"reference_{role}.png", png_bytes(cutout))
            written.append(out / f"reference_{role}.png")
        for k in range(len(self.human_masks)):
            files = {
                "human_mask": (f"mask_{k}_human.png", self.human_masks[k].astype(np.uint8) * 255),
                "object_mask": (f"mask_{k}_object.png", self.object_masks[k].astype(np.uint8) * 255),
                "mask_preview": (f"mask_{k}_preview.png", self.mask_preview(k)),
            }
            if self.images:
                files = {"image": (f"image_{k}.png", self.images[k]), **files}
            for name, array in files.values():
                atomic_write_bytes(out / name, png_bytes(array))
                written.append(out / name)
            records.append({"index": k, "seed": self.metadata["seeds"][k], **{r: f[0] for r, f in files.items()}})
        references = {role: f"reference_{role}.png" for role in self.references}
        record = {**self.metadata, "references": {**self.metadata.get("references", {}), "files": references},
                  "images": records}  # fmt: skip
        atomic_write_bytes(out / "choi.json", (json.dumps(record, indent=2, allow_nan=False) + "\n").encode())
        return [*written, out / "choi.json"]


class CHOIPipeline:
    """Two-stage customized human–object interaction generation, for any model family.

    Example:
        >>> pipe = CHOIPipeline.from_pretrained("choi-tiny")
        >>> out = pipe(human=h, object=o, interaction="a person kicking a ball", background=bg,
        ...            box=(0.2, 0.3, 0.8, 0.95), num_images=4, seed=0, options={"layout_candidates": 1})
        >>> out.images[0].shape, out.metadata["seeds"]
    """

    def __init__(
        self, mask_stage: MaskStage, image_stage: ImageStage, options: type, family: str, model_id: str = "unsaved",
        default_options: dict[str, Any] | None = None,
    ):  # fmt: skip
        self.mask_stage, self.image_stage, self.options_class = mask_stage, image_stage, options
        self.family, self.model_id = family, model_id
        self.default_options = dict(default_options or {})
        parse_options(options, self.default_options, family)  # a bad model_index.json fails at load time

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike = "choi-tiny", device: str | torch.device = "cpu",
        torch_dtype: torch.dtype = torch.float32,
    ) -> CHOIPipeline:  # fmt: skip
        """``"choi-tiny"`` (the shipped weights) or a model folder with a ``model_index.json``."""
        shipped = str(name_or_path) == tiny.FAMILY
        folder = tiny.shipped_weights() if shipped else Path(name_or_path)
        if not folder.is_dir():
            raise ChoiError(f"model {str(name_or_path)[:200]!r} is neither 'choi-tiny' nor a folder")
        index = read_model_index(folder)
        model_id = tiny.FAMILY if shipped else str(folder)
        mask_stage, image_stage, options = FAMILIES[index["family"]](folder, index, model_id, torch_dtype)
        pipe = cls(mask_stage, image_stage, options, index["family"], model_id, index.get("options"))
        return pipe.to(device)

    def to(self, device: str | torch.device) -> CHOIPipeline:
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise ChoiError("--device cuda was asked for, but no CUDA GPU is available")
        for stage in (self.mask_stage, self.image_stage):
            if hasattr(stage, "to"):
                stage.to(device)
        return self

    # --- the request, read once for both stages --------------------------------------------------

    def _read(self, request: GenerationRequest, generator: torch.Generator | list[torch.Generator] | None) -> _Read:
        options = parse_options(self.options_class, {**self.default_options, **request.options}, self.family)
        interaction = dict(self.image_stage.check_interaction(request.interaction))
        text = interaction.pop("text", request.interaction.strip())  # what the family draws it as
        background = read_background(request.background, request.max_output_side)
        original = () if background is None else given_size(request.background)
        refs = {
            "human": segment(request.human, "human", request.human_mask, None, request.sam_checkpoint),
            "object": segment(
                request.object, "object", request.object_mask, request.object_box, request.sam_checkpoint
            ),
        }
        prepare = getattr(self.image_stage, "prepare_reference", None)  # the family's own framing, if any
        (human_rgb, human_sil), (object_rgb, object_sil) = (
            prepare(role, ref) if prepare is not None else (ref.rgb, ref.silhouette) for role, ref in refs.items()
        )
        _, seeds = make_generators(request.num_images, request.seed, generator)
        layout = None if request.mask is None else read_layout_mask(request.mask)
        # The output size: the background's, else the user layout's, else the family's default; at most
        # max_output_side long. The stages draw at the working size, at most WORK_SIDE long.
        size = self.image_stage.default_size
        height, width = background.shape[:2] if background is not None else (size, size)
        if layout is not None and background is None:
            original = layout[0].shape
            height, width = fit_side(*original, request.max_output_side)
        scaled = bool(original) and tuple(original) != (height, width)
        if scaled:
            what = "background" if background is not None else "layout mask"
            log.info("the %s is %dx%d: the output is scaled to %dx%d (max_output_side %d)", what, original[1],
                     original[0], width, height, request.max_output_side)  # fmt: skip
        work_h, work_w = fit_side(height, width, max(WORK_SIDE, size))
        work_bg = None if background is None else downscale(background, max(work_h, work_w))
        inputs = StageInputs(human_rgb, human_sil, object_rgb, object_sil, text, seeds, work_h, work_w, work_bg,
                             request.box)  # fmt: skip
        metadata = {
            "request": request.record(),
            "interaction": request.interaction,
            **({"interaction_drawn": text} if text != request.interaction.strip() else {}),
            **interaction,
            "references": {role: {"rule": ref.rule, "size": list(ref.silhouette.shape)} for role, ref in refs.items()},
            "seeds": seeds,
            "num_images": request.num_images,
            "box": None if request.box is None else list(request.box),
            "background": background is not None,
            "size": [height, width],
            **({"scaled_from": list(original)} if scaled else {}),
            **({"work_size": [work_h, work_w]} if (work_h, work_w) != (height, width) else {}),
            "family": self.family,
            "options": _jsonable(vars(options)),
            "model": {"id": self.model_id},
            "choi_version": __version__,
        }
        return _Read(inputs, options, metadata, layout, background)

    def _layouts(self, request: GenerationRequest, read: _Read, callback: Callback | None) -> Layouts:
        inputs = read.inputs
        if read.layout is None:
            layouts = self.mask_stage(inputs, request.mask_steps, request.mask_guidance, read.options, callback)
            layouts.metadata = {"source": "stage-1", **layouts.metadata}
            return layouts
        hm, om = read.layout
        height, width = read.metadata["size"]
        if inputs.background is not None and not same_aspect(hm.shape, (height, width)):
            raise ChoiError(f"the mask is {hm.shape[1]}x{hm.shape[0]}, the output {width}x{height} (the background's "
                            "size): give a mask of the background's size")  # fmt: skip
        k = inputs.num_images
        hm, om = (resize_masks(m[None], inputs.height, inputs.width) for m in (hm, om))
        return Layouts(np.repeat(hm, k, 0), np.repeat(om, k, 0), {"source": "user"})

    @staticmethod
    def _request(request: GenerationRequest | None, fields: dict[str, Any]) -> GenerationRequest:
        if request is not None and fields:
            raise ChoiError("pass a GenerationRequest or its fields, not both")
        if request is not None:
            return request
        unknown = sorted(set(fields) - set(GenerationRequest.fields()))
        if unknown:
            renamed = {"num_inference_steps": "steps", "guidance_scale": "guidance"}
            hints = [f"{k} is now {renamed[k]!r}" if k in renamed else f"{k} is a family option: options={{{k!r}: ...}}"
                     for k in unknown]  # fmt: skip
            raise ChoiError(f"unknown argument(s): {'; '.join(hints)}")
        return GenerationRequest(**fields)

    def generate_masks(
        self, request: GenerationRequest | None = None, *, generator=None, callback: Callback | None = None,
        **fields: Any,
    ) -> CHOIOutput:  # fmt: skip
        """Stage 1 alone: K person/object mask pairs (to inspect or edit before rendering), no images."""
        request = self._request(request, fields)
        read = self._read(request, generator)
        layouts = self._layouts(request, read, callback)
        return self._output([], layouts, read, {"stage1": layouts.metadata})

    def __call__(
        self, request: GenerationRequest | None = None, *, generator=None, callback: Callback | None = None,
        **fields: Any,
    ) -> CHOIOutput:  # fmt: skip
        """Generate ``num_images`` images of this person doing ``interaction`` with this object.

        Takes a :class:`~choi.pipelines.request.GenerationRequest` or its fields as keywords
        (``human``, ``object``, ``interaction``, ``background``, ``box``, ``mask``, ``seed``,
        ``num_images``, ``mask_steps``, ``mask_guidance``, ``steps``, ``guidance``, ``options``...).
        ``generator``: one CPU generator per image instead of ``seed`` (their seeds are used).
        ``callback(stage, step, total)`` reports progress.
        """
        # 1. Check and read the request
        request = self._request(request, fields)
        read = self._read(request, generator)
        # 2. Stage 1: the layouts (or the user's)
        layouts = self._layouts(request, read, callback)
        # 3. Stage 2: the images
        images, stage2 = self.image_stage(read.inputs, layouts, request.steps, request.guidance, read.options, callback)
        return self._output(images, layouts, read, {"stage1": layouts.metadata, "stage2": stage2})

    @staticmethod
    def _output(images, layouts: Layouts, read: _Read, stages: dict[str, Any]) -> CHOIOutput:
        """The stages' results at the output size: images upscaled onto the full-size background, masks with them."""
        inputs, background, metadata = read.inputs, read.background, {**read.metadata, **stages}
        references = {
            "human": rgba_cutout(inputs.human, inputs.human_silhouette),
            "object": rgba_cutout(inputs.object, inputs.object_silhouette),
        }
        height, width = metadata["size"]
        if (inputs.height, inputs.width) != (height, width):
            if background is not None:
                images = [upscale_onto(im, inputs.background, background) for im in images]
            else:
                images = [cv2.resize(im, (width, height), interpolation=cv2.INTER_CUBIC) for im in images]
            layouts.human_masks, layouts.object_masks = (
                resize_masks(m, height, width) for m in (layouts.human_masks, layouts.object_masks)
            )
        return CHOIOutput(images, layouts.human_masks, layouts.object_masks, _jsonable(metadata), references,
                          background)  # fmt: skip


def _jsonable(value: Any) -> Any:
    """Metadata as JSON can hold it: tuples → lists, numpy scalars → numbers, arrays and images described."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return f"<array {value.shape}>"
    if isinstance(value, os.PathLike):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return f"<{type(value).__name__}>"
