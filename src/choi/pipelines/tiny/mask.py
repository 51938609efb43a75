"""choi-tiny's stage 1: reference silhouettes + interaction (+ background, box) → human and object masks.

Example:
    >>> pipe = MaskPipeline.from_pretrained("runs/mask/model")
    >>> out = pipe(human="person.png", object="bike.png", interaction="riding a bike", seed=0, num_images=4)
    >>> out.human_masks.shape, out.metadata["seeds"]
    ((4, 128, 128), [0, 1, 2, 3])
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from choi import __version__
from choi.errors import ChoiError, quote
from choi.io import atomic_write_bytes, png_bytes
from choi.models.conditioning import box_in_window, zoom_window
from choi.models.image_encoder import ReferenceEncoder
from choi.models.mask_generator import MaskConditions, MaskGenerator
from choi.pipelines.inputs import (
    ImageInput,
    image_tensor,
    mask_preview,
    pad_square,
    parse_box,
    read_background,
    read_reference,
)
from choi.pipelines.request import MAX_GUIDANCE, MAX_IMAGES, MAX_STEPS
from choi.pipelines.sampling import denoise, get_noise, make_generators, make_scheduler
from choi.pipelines.stages import check_number
from choi.pipelines.tiny.runner import ModelRunner
from choi.vocabulary import resolve

log = logging.getLogger(__name__)

DEFAULT_STEPS = 16  # DPM-Solver++(2M): masks are sharp by ~12 steps (docs/experiments.md#mask-96)
DEFAULT_GUIDANCE = 2.5  # best mean of accuracy and retrieval end to end (docs/experiments.md#mask-guidance)
MIN_MASK_FRACTION = 0.001  # a mask under this fraction of the image counts as missing (see to_masks)


@dataclass
class MaskPipelineOutput:
    """Generated masks of K images plus everything needed to reproduce them."""

    human_masks: np.ndarray  # (K, H, W) bool
    object_masks: np.ndarray  # (K, H, W) bool
    soft: np.ndarray  # (K, 2, S, S) float [0, 1]: the model's continuous masks before upsampling
    metadata: dict[str, Any]  # inputs, seeds, sampler settings, model id and version
    background: np.ndarray | None = None  # the request's background, used by previews

    def preview(self, k: int) -> np.ndarray:
        return mask_preview(self.human_masks[k], self.object_masks[k], self.background)

    def save(self, out_dir: str | os.PathLike, inputs: dict[str, Any] | None = None) -> list[Path]:
        """Write ``mask_K_{human,object,preview}.png`` and ``mask.json``, each atomically; returns the paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written, images = [], []
        for k in range(len(self.human_masks)):
            files = {
                "human": (f"mask_{k}_human.png", self.human_masks[k].astype(np.uint8) * 255),
                "object": (f"mask_{k}_object.png", self.object_masks[k].astype(np.uint8) * 255),
                "preview": (f"mask_{k}_preview.png", self.preview(k)),
            }
            for name, array in files.values():
                atomic_write_bytes(out / name, png_bytes(array))
                written.append(out / name)
            images.append({"index": k, "seed": self.metadata["seeds"][k], **{r: f[0] for r, f in files.items()}})
        record = {"inputs": inputs or {}, **self.metadata, "images": images}
        atomic_write_bytes(out / "mask.json", (json.dumps(record, indent=2) + "\n").encode())
        return [*written, out / "mask.json"]


def check_strength(strength: Any, name: str = "strength") -> float:
    if isinstance(strength, bool) or not isinstance(strength, int | float) or not 0 < strength <= 1:
        raise ChoiError(f"{name} must be a number in (0, 1], got {quote(strength)}")
    return float(strength)


@torch.no_grad()
def sample_masks(
    model: MaskGenerator,
    cond: MaskConditions,
    generators: Sequence[torch.Generator],
    steps: int = DEFAULT_STEPS,
    guidance_scale: float = DEFAULT_GUIDANCE,
    init: torch.Tensor | None = None,
    strength: float = 1.0,
    callback: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Stage 1's sampler on (N) conditions in the model's frame → (N, 2, S, S) masks in [-1, 1].

    Sample k's noise comes from ``generators[k]``. ``init`` (N, 2, S, S) in [0, 1]: redraw those
    masks from ``strength`` of the way to noise instead of drawing new ones (:func:`denoise`).
    The unconditional branch drops the semantic conditions; box and background stay hard constraints.
    """
    enc = model.encode_conditions(cond)
    uncond = model.encode_conditions(cond.dropped(text=True, refs=True)) if guidance_scale > 1.0 else None
    scheduler = make_scheduler(model.config)
    # The sampler state stays in fp32 whatever the model's dtype; the model casts its own input.
    size = model.config.sample_size
    noise = get_noise(generators, (2, size, size), model.device, torch.float32)
    if init is not None:
        init = init.to(noise.device, torch.float32) * 2 - 1
    return denoise(model, scheduler, noise, enc, uncond, steps, guidance_scale, callback, init, strength)


def split_roles(soft: Any) -> tuple[Any, Any]:
    """(N, 2, H, W) soft masks in [0, 1] (array or tensor) → (human, object) (N, H, W) bool.

    Each channel over 0.5; a pixel claimed by both goes to the stronger one (visible masks never
    overlap in the training data).
    """
    human = (soft[:, 0] > 0.5) & (soft[:, 0] >= soft[:, 1])
    obj = (soft[:, 1] > 0.5) & (soft[:, 1] > soft[:, 0])
    return human, obj


def to_masks(
    x0: torch.Tensor, height: int, width: int, box: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Model output in [-1, 1] → (human, object) bool masks at (height, width) and the soft masks.

    Bilinear on the continuous masks, then threshold (:func:`split_roles`): clean edges at any size.
    """
    soft = ((x0.float() + 1) / 2).clamp(0, 1)  # (K, 2, S, S)
    up = F.interpolate(soft, size=(height, width), mode="bilinear", align_corners=False).cpu().numpy()
    human, obj = split_roles(up)
    # A request always has a person and an object, but a small object's channel can stay under 0.5
    # everywhere (11% of 200 HOI-World test requests): then its mask is where that channel exceeds
    # half its own peak. Mask-recognizer accuracy 76.0 → 79.5% on those 200 (benchmarks/bench_mask.py).
    # With a box, only inside it (the pair must fill the box).
    allowed = np.ones((height, width), bool)
    if box is not None:
        x1, y1, x2, y2 = (round(v * n) for v, n in zip(box, (width, height, width, height), strict=True))
        allowed = np.zeros((height, width), bool)
        allowed[y1:y2, x1:x2] = True
    min_pixels = MIN_MASK_FRACTION * height * width
    for k in range(len(up)):
        for own, other, c in ((obj, human, 1), (human, obj, 0)):
            channel = np.where(allowed, up[k, c], 0)
            peak = channel.max()
            if own[k].sum() < min_pixels and peak > 0:
                own[k] = (channel > 0.5 * peak) & ~other[k]
    return human, obj, soft.cpu().numpy()


class MaskPipeline(ModelRunner):
    """Stage 1: reference photos + interaction (+ background, box) → human and object masks.

    The references are segmented (plain backgrounds: :func:`choi.data.segment.silhouette`) unless
    their silhouettes are given. Image ``k`` depends only on its own seed, never on ``num_images``.

    Example:
        >>> pipe = MaskPipeline.from_pretrained()  # the shipped choi-tiny weights
        >>> out = pipe(human=h, object=o, interaction="kick ball", box=(0.2, 0.3, 0.8, 0.95), seed=7)
        >>> out.human_masks[0].shape  # (H, W) of the human reference (or of the background)
    """

    model_class, what = MaskGenerator, "mask"
    # the frozen image encoder of the references' identity, for a model that reads it (``image_dim`` > 0):
    # the choi-sd folder's CLIP image encoder, set by choi-sd's loader
    reference_encoder: ReferenceEncoder | None = None

    @torch.no_grad()
    def __call__(
        self,
        human: ImageInput | None = None,
        object: ImageInput | None = None,  # noqa: A002 - the user-facing name of the object reference
        interaction: str = "",
        background: ImageInput | None = None,
        box: str | Sequence[float] | None = None,
        human_mask: np.ndarray | None = None,
        object_mask: np.ndarray | None = None,
        num_images: int = 1,
        seed: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = DEFAULT_STEPS,
        guidance_scale: float = DEFAULT_GUIDANCE,
        height: int | None = None,
        width: int | None = None,
        zoom: bool | None = None,
        init_masks: tuple[np.ndarray, np.ndarray] | None = None,
        strength: float = 1.0,
        callback: Callable[[int, int], None] | None = None,
        reference_images: tuple[np.ndarray | None, np.ndarray | None] | None = None,
    ) -> MaskPipelineOutput:
        """Generate ``num_images`` human/object mask pairs for one request.

        ``seed`` gives image k the seed ``seed + k``; alternatively pass one CPU ``generator`` per
        image. ``guidance_scale <= 1`` disables classifier-free guidance (half the compute).
        The masks have the background's size, else ``height``/``width``, else the human reference's.
        With ``zoom`` and a ``box``, the model draws only the window around the box
        (:func:`~choi.models.conditioning.zoom_window`) at its full resolution, as a model trained
        with ``choi train mask --zoom`` can; ``soft`` is then that window's. ``None``: whether the
        model was (its config's ``zoom``). ``init_masks`` (human, object), each (H, W) of the output's
        size: redraw these masks (a rough sketch, another layout) instead of drawing new ones, from
        ``strength`` of the way to noise (img2img; 1.0 is close to a fresh draw).
        ``reference_images`` (human, object) RGB arrays of the silhouettes' size: the photos whose
        identity a model with identity tokens reads when only silhouettes are given (else the blank crop).
        """
        # 1. Check inputs
        cls_ = resolve(interaction)
        check_number("num_images", num_images, 1, MAX_IMAGES, integer=True)
        check_number("mask_steps", num_inference_steps, 1, MAX_STEPS, integer=True)
        check_number("mask_guidance", guidance_scale, 0, MAX_GUIDANCE)
        box_t = parse_box(box) if box is not None else None
        bg = read_background(background)
        human_rgb, human_sil = _reference(human, human_mask, "human")
        object_rgb, object_sil = _reference(object, object_mask, "object")
        if reference_images is not None:
            human_rgb, object_rgb = reference_images
        if bg is not None:
            height, width = bg.shape[:2]
        height, width = height or human_sil.shape[0], width or human_sil.shape[1]
        if not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0):
            raise ChoiError(f"height and width must be positive integers, got {height!r} x {width!r}")
        if init_masks is not None:
            strength = check_strength(strength)
            shapes = [np.shape(m) for m in init_masks] if len(init_masks) == 2 else []
            if shapes != [(height, width)] * 2:
                raise ChoiError(f"init_masks must be (human, object) masks of {height}x{width}, got shapes {shapes}")

        zoom = bool(self.model.config.zoom) if zoom is None else zoom
        window = zoom_pixels(box_t, height, width) if zoom and box_t is not None else None
        model_box, model_bg = box_t, bg
        if window is not None:
            left, top, right, bottom = window
            frame = torch.tensor([[left / width, top / height, right / width, bottom / height]])
            model_box = tuple(box_in_window(torch.tensor([box_t]), frame)[0].tolist())
            model_bg = None if bg is None else bg[top:bottom, left:right]

        # 2. Per-image generators: image k depends on its own generator only
        generators, seeds = make_generators(num_images, seed, generator)

        # 3. The conditions
        model, device = self.model, self.model.device
        ref_masks = _stack_refs(human_sil, object_sil)
        text = self.text_encoder([interaction.strip()] * num_images).to(device)
        cond = MaskConditions.build(
            text,
            ref_masks.expand(num_images, -1, -1, -1).to(device),
            box=None if model_box is None else torch.tensor([model_box] * num_images, device=device),
            background=None if model_bg is None else image_tensor(model_bg).expand(num_images, -1, -1, -1).to(device),
            ref_embeds=self._identity([(human_rgb, human_sil), (object_rgb, object_sil)], num_images),
        )

        # 4. Denoising loop (from the given masks part way, with init_masks)
        init = None
        if init_masks is not None:
            full = torch.from_numpy(np.stack(init_masks).astype(np.float32))[None]  # (1, 2, H, W)
            if window is not None:
                left, top, right, bottom = window
                full = full[..., top:bottom, left:right]
            size = model.config.sample_size
            init = F.interpolate(full, size=(size, size), mode="area").expand(num_images, -1, -1, -1)
        x0 = sample_masks(model, cond, generators, num_inference_steps, guidance_scale, init, strength, callback)

        # 5. Post-process: upsample the continuous masks, then threshold
        if window is None:
            human_masks, object_masks, soft = to_masks(x0, height, width, box_t)
        else:
            left, top, right, bottom = window
            cut_h, cut_o, soft = to_masks(x0, bottom - top, right - left, model_box)
            human_masks = np.zeros((num_images, height, width), bool)
            object_masks = np.zeros_like(human_masks)
            human_masks[:, top:bottom, left:right], object_masks[:, top:bottom, left:right] = cut_h, cut_o
        metadata = {
            "interaction": interaction,
            "interaction_class": cls_.name,
            "seeds": seeds,
            "num_images": num_images,
            "num_inference_steps": num_inference_steps,
            "guidance_scale": guidance_scale,
            "scheduler": "DPMSolverMultistepScheduler(dpmsolver++, order 2, trailing)",
            "box": list(box_t) if box_t is not None else None,
            "zoom_window": list(window) if window is not None else None,
            "init_masks": init_masks is not None,
            "strength": strength if init_masks is not None else None,
            "background": bg is not None,
            "height": height,
            "width": width,
            "model": {"id": self.model_id, "version": self.model_version, "class": type(model).__name__},
            "choi_version": __version__,
        }
        return MaskPipelineOutput(human_masks, object_masks, soft, metadata, background=bg)

    def to(self, device: str | torch.device) -> MaskPipeline:
        super().to(device)
        if self.reference_encoder is not None:
            self.reference_encoder.to(device)
        return self

    def _identity(self, pairs: list[tuple[np.ndarray | None, np.ndarray]], n: int) -> torch.Tensor | None:
        """(n, 2, E) image embeddings of the (human, object) references, for a model with identity tokens."""
        if not self.model.config.image_dim:
            return None
        if self.reference_encoder is None:
            raise ChoiError("this mask model reads the references' identity: load it through a choi-sd model folder, "
                            "which names the CLIP image encoder")  # fmt: skip
        embeds = self.reference_encoder(pairs).to(self.model.device)  # (2, E)
        return embeds[None].expand(n, -1, -1)


def zoom_pixels(box: Sequence[float], height: int, width: int) -> tuple[int, int, int, int]:
    """The zoom window around a normalised ``box`` (:func:`~choi.models.conditioning.zoom_window`) in
    whole pixels of a (height, width) frame: x0, y0, x1, y1, at least one pixel each way."""
    wx0, wy0, wx1, wy1 = zoom_window(torch.tensor([box], dtype=torch.float32))[0].tolist()
    x0, y0 = min(round(wx0 * width), width - 1), min(round(wy0 * height), height - 1)
    return x0, y0, max(round(wx1 * width), x0 + 1), max(round(wy1 * height), y0 + 1)


def _reference(image: ImageInput | None, mask: np.ndarray | None, role: str) -> tuple[np.ndarray | None, np.ndarray]:
    """The reference's RGB (None without an image) and silhouette: ``mask`` as given, else segmented from ``image``."""
    if mask is None and image is None:
        raise ChoiError(f"give the {role} reference image (or its silhouette)")
    if image is None:
        mask = np.asarray(mask).astype(bool)
        if mask.ndim != 2 or not mask.any():
            raise ChoiError(f"{role} reference silhouette must be a non-empty (H, W) mask")
        return None, mask
    return read_reference(image, mask, role)


def _stack_refs(human: np.ndarray, obj: np.ndarray) -> torch.Tensor:
    """Two silhouettes of possibly different sizes → (1, 2, S, S): each padded to a square (shape kept)
    and resized to the larger side. The model crops each to its box anyway, so the canvas is free."""
    size = max(*human.shape, *obj.shape)
    squares = [pad_square(m.astype(np.uint8) * 255, size) > 127 for m in (human, obj)]
    return torch.from_numpy(np.stack(squares)[None]).float()
