"""The end-to-end CHOI pipeline: references + interaction (+ background, box) → images and masks.

Stage 1 (:class:`~choi.pipelines.mask.MaskPipeline`) draws where the person and the object go and
how they touch; stage 2 (:class:`ImageRenderer`) paints *these* identities inside those masks. A
user mask skips stage 1. With a background, pixels outside the generated region are the
background's own.

Example:
    >>> pipe = CHOIPipeline.from_pretrained("choi-tiny")  # shipped weights, offline
    >>> out = pipe(human="examples/human_0.png", object="examples/object_0.png", interaction="ride bicycle", seed=0)
    >>> out.save("outputs/ride")  # image_0.png, mask_0_*.png, choi.json
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from choi import __version__
from choi.data.segment import as_rgb, load_image
from choi.errors import ChoiError
from choi.io import atomic_write_bytes, png_bytes
from choi.models.conditioning import generation_region, layout_region, snap_silhouettes
from choi.models.image_generator import ImageConditions, ImageGenerator, check_prior_strength
from choi.models.text_encoder import TEXT_ENCODER_NAME, TextEncoder
from choi.pipelines.mask import DEFAULT_GUIDANCE as MASK_GUIDANCE
from choi.pipelines.mask import DEFAULT_STEPS as MASK_STEPS
from choi.pipelines.mask import (
    HUMAN_COLOUR,
    OBJECT_COLOUR,
    ImageInput,
    MaskPipeline,
    MaskPipelineOutput,
    check_sampling,
    denoise,
    get_noise,
    make_generators,
    make_scheduler,
    mask_preview,
    pad_square,
    parse_box,
    read_background,
    read_reference,
    weights_digest,
)
from choi.vocabulary import resolve

# One step of DPM-Solver++ on the image model by default: its clean-image estimate from pure noise.
# choi-tiny's 8x8 patches cannot carry per-pixel noise through the net (see ImageModelConfig), so
# each further step at lower noise passes some of that noise on as coloured speckle. On 200 test
# requests end to end that no `choi eval --n <= 500` table uses (positions 1000-1199 of its seeded
# order; benchmarks/bench_steps.py; the object fit on), 1 / 2 / 4 / 20 steps gave recognizer accuracy
# 64.5 / 61.0 / 59.0 / 61.5%, human retrieval 78.0 / 72.0 / 62.5 / 52.0%, object retrieval 52.5 / 41.0 /
# 33.5 / 24.5% and FID 8.17 / 10.01 / 10.65 / 10.59, at 0.06 / 0.09 / 0.15 / 0.71 s per image. Seeds still differ, less
# (11 vs 34 grey levels inside the masks on 30 test requests); more steps give more varied, noisier
# images, and a larger model may want them.
DEFAULT_STEPS = 1
# Classifier-free guidance on the references and the text (layout and background are never dropped).
# Off by default: with the warp prior the references already steer the image, and on 32 HOI-World test
# requests with true masks guidance 1.0 / 1.5 / 2.0 / 3.0 gave recognizer accuracy 93.8 / 90.6 / 87.5 /
# 87.5% and error inside the masks 47.8 / 48.2 / 50.9 / 58.0; it also halves the cost of a step.
DEFAULT_GUIDANCE = 1.0
Callback = Callable[[str, int, int], None]  # (stage "mask" | "image", step, total)
# Stage 1's object masks are fitted to the object reference's own outline before stage 2 paints in them
# (fit_object_masks): turned by a multiple of 360°/48, mirrored or not (the warp prior's search), at
# this working size. On 400 held-out test requests end to end (positions 1000-1399 of `choi eval`'s
# seeded order, `benchmarks/bench_steps.py --n 400 --steps 1 --object-fit off,on`) it took interaction
# accuracy 61.8 → 64.0%, object retrieval 37.2 → 47.5% and FID 7.82 → 7.32; human retrieval 75.0 → 73.5%
# and the mask recognizer's accuracy on the masks 86.8 → 80.0% (an object in its reference's pose does
# not always show the interaction as stage 1 drew it).
OBJECT_FIT_TURNS = 48
OBJECT_FIT_SIZE = 128
# How much of the warp prior (each reference stretched into its mask) stage 2 keeps as it is, where
# that reference covers the layout: (human, object), 0 = the network's whole correction, 1 = the
# warped reference's own pixels (ImageGenerator.encode_conditions). choi-tiny's correction is soft, so
# it blurs what the prior already has right: a rigid object fitted to its mask, and the person's colours.
# On 400 held-out test requests end to end (positions 1000-1399 of `choi eval`'s seeded order, object fit
# on; `python benchmarks/bench_steps.py --data data/hoiw --n 400 --steps 1 --prior-strength 0,0 0,1 ...`,
# benchmarks/results/steps/bench_prior_strength.json), (human, object) 0,0 / 0,1 / 0.5,1 / 1,1 gave interaction accuracy
# 64.0 / 66.8 / 66.2 / 64.2%, human retrieval 73.5 / 74.2 / 78.8 / 81.5%, object retrieval 47.5 / 60.2 /
# 62.0 / 61.0% and FID 7.32 / 6.64 / 6.44 / 6.26; 0.5,1 has the best mean of accuracy and the two
# retrievals but 0.75,1 (69.1 vs 69.0, within noise) and keeps the person's pose-blind stretch at half.
DEFAULT_PRIOR_STRENGTH = (0.5, 1.0)
# With a background, the output keeps the background's own pixels beyond this margin around the layout
# masks (a fraction of the side: 1 px at 128), although stage 2 is given, as trained, the masks grown
# by LAYOUT_MARGIN (3 px) to paint: in that ring choi-tiny cannot see the background and paints a grey
# haze around the figures. On 400 held-out test requests (positions 1000-1399, one layout candidate),
# keeping the background beyond 3 / 1 / 0 px gave interaction accuracy 66.2 / 71.0 / 72.0%, retrieval
# human 78.8 / 80.5 / 80.2% and object 62.0 / 64.5 / 63.0%, FID 6.44 / 4.34 / 3.67 end to end, and
# 84.8 / 88.8 / 87.2%, 90.8 / 93.0 / 93.2%, 73.5 / 80.5 / 76.8%, FID 4.03 / 2.40 / 2.25 in the true masks
# (README, "The composite"). 1 px has the best mean of accuracy and the two retrievals in both.
COMPOSITE_MARGIN = 1 / 128
# Stage 1 draws this many layouts per image and keeps the one whose object mask the object reference's
# own outline fits best (draw_layouts): a rigid object that fits its mask is a layout stage 1 drew
# cleanly. On 400 held-out test requests end to end (positions 1000-1399, `benchmarks/bench_steps.py
# --n 400 --steps 1 --layout-candidates 1 4`, benchmarks/results/steps/bench_layout_candidates.json),
# 1 → 4 candidates gave interaction accuracy 71.0 → 71.8%, mask accuracy 80.0 → 87.5%, retrieval human
# 80.5 → 83.5% and object 64.5 → 65.2%, FID 4.34 → 4.40, rare-class mAP 65.9 → 61.2, at 0.73 → 1.88 s of
# stage 1 per image in that run (README, "The layout choice").
LAYOUT_CANDIDATES = 4
MAX_LAYOUT_CANDIDATES = 64


def default_model_path() -> Path:
    """The choi-tiny weights shipped inside the package: ``mask/`` (stage 1) and ``image/`` (stage 2)."""
    return Path(str(resources.files("choi") / "weights"))


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1) / 255.0


def read_layout_mask(mask: Any) -> tuple[np.ndarray, np.ndarray]:
    """A user mask → (human, object) (H, W) bool.

    Accepts a ``(human, object)`` pair of arrays, a colour-coded (H, W, 3) preview as choi writes
    it (red person, blue object), or the path of such a PNG.
    """
    if isinstance(mask, tuple | list) and len(mask) == 2:
        human, obj = (np.asarray(m).astype(bool) for m in mask)
        if human.ndim != 2 or human.shape != obj.shape:
            raise ChoiError(f"mask pair must be two (H, W) arrays of one size, got {human.shape} and {obj.shape}")
    else:
        rgb = as_rgb(load_image(mask, "mask") if isinstance(mask, str | os.PathLike) else mask, "mask")
        px = rgb.astype(np.int32)

        def near(*colours: tuple[int, int, int]) -> np.ndarray:
            return np.any([np.abs(px - np.array(c)).max(-1) < 60 for c in colours], axis=0)

        # choi's preview colours, or the pure red and blue of a paint program's sketch.
        red = near(HUMAN_COLOUR, (255, 0, 0))
        human, obj = red, near(OBJECT_COLOUR, (0, 0, 255)) & ~red
    if not human.any() or not obj.any():
        raise ChoiError(
            f"the mask must contain both the person (red, RGB {HUMAN_COLOUR} or pure red) "
            f"and the object (blue, RGB {OBJECT_COLOUR} or pure blue)"
        )
    return human, obj


def snap_objects(
    human_masks: np.ndarray, object_masks: np.ndarray, object_silhouette: np.ndarray, turns: int = OBJECT_FIT_TURNS
) -> np.ndarray:
    """Stage 1's (K, H, W) object masks → the object reference's silhouette fitted to each, where the person is not.

    At 64×64 stage 1 draws thin or small objects (chair legs, a held cup) as ragged islands; stage 2
    then paints a ragged object. The object is rigid, so its mask here is the reference's own outline,
    turned and stretched onto the stage-1 mask's box (the turn that overlaps it best, as the warp
    prior chooses), minus the person, who is in front. May be empty (see :func:`fit_object_masks`).
    """
    k, h, w = object_masks.shape
    scale = min(1.0, OBJECT_FIT_SIZE / max(h, w))  # search the turn at a working size, draw at full size
    work = (max(1, round(h * scale)), max(1, round(w * scale)))
    targets = F.interpolate(torch.from_numpy(object_masks[:, None]).float(), size=work, mode="area")
    sil = pad_square(object_silhouette.astype(np.uint8) * 255, OBJECT_FIT_SIZE, Image.BILINEAR) > 127
    sil = torch.from_numpy(sil)[None, None].float().expand(k, -1, -1, -1)
    return snap_silhouettes(sil, targets, turns, size=(h, w))[:, 0].numpy() & ~human_masks


def fit_object_masks(
    human_masks: np.ndarray, object_masks: np.ndarray, object_silhouette: np.ndarray, turns: int = OBJECT_FIT_TURNS
) -> np.ndarray:
    """:func:`snap_objects`, keeping stage 1's own mask where the fit leaves nothing."""
    fitted = snap_objects(human_masks, object_masks, object_silhouette, turns)
    return np.where(fitted.any((1, 2))[:, None, None], fitted, object_masks)


def check_layout_candidates(value: Any) -> int:
    """The number of stage-1 layouts drawn per image: :data:`LAYOUT_CANDIDATES` for ``None``, else a whole
    number from 1 to :data:`MAX_LAYOUT_CANDIDATES`, or a ChoiError."""
    if value is None:
        return LAYOUT_CANDIDATES
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 1 <= value <= MAX_LAYOUT_CANDIDATES:
        raise ChoiError(f"layout candidates must be a whole number from 1 to {MAX_LAYOUT_CANDIDATES}, got {value!r}")
    return int(value)


def draw_layouts(
    masks: MaskPipeline,
    num_images: int = 1,
    seed: int | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
    candidates: int | None = None,
    fit_object: bool = True,
    **request: Any,
) -> MaskPipelineOutput:
    """Stage 1 with its layout choice: ``candidates`` layouts per image, the best-fitting one kept.

    Image k's candidates (default :data:`LAYOUT_CANDIDATES`) are the first noise draws of its own
    generator (the first is what one candidate gives), so image k still depends on its seed alone.
    Each is scored by the IoU of its object mask (where the person is not) with the object
    reference's outline fitted to it (:func:`snap_objects`), and the best is kept; its object mask
    is then that fitted outline with ``fit_object``, or as stage 1 drew it. ``request`` holds the
    mask pipeline's other arguments.
    """
    candidates = check_layout_candidates(candidates)
    generators, seeds = make_generators(num_images, seed, generator)
    out = masks(
        **request, num_images=num_images * candidates, generator=[g for g in generators for _ in range(candidates)]
    )
    meta = {**out.metadata, "seeds": seeds, "num_images": num_images, "layout_candidates": candidates}
    if candidates == 1 and not fit_object:
        return replace(out, metadata=meta)
    _, object_sil = read_reference(request.get("object"), request.get("object_mask"), "object reference")
    fitted = snap_objects(out.human_masks, out.object_masks, object_sil)
    drawn = out.object_masks & ~out.human_masks
    iou = (fitted & drawn).sum((1, 2)) / np.maximum((fitted | drawn).sum((1, 2)), 1)
    best = iou.reshape(num_images, candidates).argmax(1) + np.arange(num_images) * candidates
    object_masks = out.object_masks
    meta["layout_scores"] = [round(float(v), 4) for v in iou[best]]
    if fit_object:  # the fitted outline, or stage 1's own mask where the fit leaves nothing
        object_masks = np.where(fitted.any((1, 2))[:, None, None], fitted, object_masks)
        meta["object_fit_turns"] = OBJECT_FIT_TURNS
    return replace(
        out, human_masks=out.human_masks[best], object_masks=object_masks[best], soft=out.soft[best], metadata=meta
    )


class ImageRenderer:
    """Stage 2: paint the referenced person and object inside a layout (masks, or a box alone).

    Example:
        >>> render = ImageRenderer(ImageGenerator.from_pretrained("runs/image/model"))
        >>> images = render(human=h, object=o, interaction="kick ball", layout_masks=(hm, om), seeds=[0])
    """

    def __init__(
        self,
        model: ImageGenerator,
        text_encoder: TextEncoder | None = None,
        model_id: str = "unsaved",
        model_version: str = "unsaved",
    ):
        if model.config.text_encoder != TEXT_ENCODER_NAME:
            raise ChoiError(f"the image model expects text encoder '{model.config.text_encoder}'")
        self.model = model.eval()
        self.text_encoder = text_encoder or TextEncoder(max_length=model.config.max_text_tokens)
        self.model_id, self.model_version = model_id, model_version

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, torch_dtype: torch.dtype = torch.float32, text_encoder: TextEncoder | None = None
    ) -> ImageRenderer:
        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise ChoiError(f"no image model in {folder} (expected a folder from `choi train image`, e.g. RUN/model)")
        try:
            model = ImageGenerator.from_pretrained(folder, torch_dtype=torch_dtype)
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise ChoiError(f"cannot load the image model in {folder}: {err}") from err
        return cls(model, text_encoder, str(folder), weights_digest(folder))

    @torch.no_grad()
    def __call__(
        self,
        human: ImageInput | None,
        object: ImageInput | None,  # noqa: A002 - the user-facing name of the object reference
        interaction: str,
        layout_masks: tuple[np.ndarray, np.ndarray] | None = None,
        box: Sequence[float] | None = None,
        background: np.ndarray | None = None,
        human_mask: np.ndarray | None = None,
        object_mask: np.ndarray | None = None,
        seeds: Sequence[int] | None = None,
        generators: Sequence[torch.Generator] | None = None,
        num_inference_steps: int = DEFAULT_STEPS,
        guidance_scale: float = DEFAULT_GUIDANCE,
        prior_strength: tuple[float, float] = DEFAULT_PRIOR_STRENGTH,
        composite_margin: float = COMPOSITE_MARGIN,
        callback: Callable[[int, int], None] | None = None,
    ) -> list[np.ndarray]:
        """K images, (H, W, 3) uint8: the background's size, else the masks', else the model's.

        ``layout_masks`` are (K, H, W) human and object masks (two-stage); without them the layout
        is ``box`` alone (single-stage). The model is given the region it was trained to paint: the
        masks grown by a few pixels (or the box plus a margin). With a background, the output keeps
        the background's own pixels beyond ``composite_margin`` (a fraction of the side) around the
        masks, or outside that box region.
        ``prior_strength`` (human, object) is how much of each warped reference is kept as it is
        (:data:`DEFAULT_PRIOR_STRENGTH`).
        """
        model, device = self.model, self.model.device
        size = model.config.sample_size
        human_rgb, human_sil = read_reference(human, human_mask, "human reference")
        object_rgb, object_sil = read_reference(object, object_mask, "object reference")
        if human_rgb is None or object_rgb is None:
            raise ChoiError("stage 2 needs the human and object reference photos, not only their silhouettes")
        if generators is None:
            generators = [torch.Generator().manual_seed(int(s)) for s in (seeds or [0])]
        k = len(generators)
        if layout_masks is None and box is None:
            raise ChoiError("stage 2 needs a layout: the masks, or at least the box")

        # Layout and region, per image, at the model's size
        if layout_masks is not None:
            hm, om = (np.asarray(m).astype(bool).reshape(-1, *np.shape(m)[-2:]) for m in layout_masks)
            if len(hm) != k:
                raise ChoiError(f"got {len(hm)} layout masks for {k} images")
            out_h, out_w = hm.shape[-2:]
            masks = F.interpolate(torch.from_numpy(np.stack([hm, om], 1)).float(), size=(size, size), mode="area")
            box_t, region = None, layout_region(masks)  # (K, 1, S, S): the masks carry the layout, box unused
        else:
            out_h = out_w = size
            masks, box_t = None, torch.tensor([box] * k, dtype=torch.float32)
            region = generation_region(box_t, size)
        if background is not None:
            out_h, out_w = background.shape[:2]

        refs = torch.stack(
            [
                _to_tensor(pad_square(human_rgb, size, Image.BILINEAR)),
                _to_tensor(pad_square(object_rgb, size, Image.BILINEAR)),
            ]
        )
        ref_masks = torch.stack(
            [
                torch.from_numpy(pad_square(human_sil.astype(np.uint8) * 255, size, Image.BILINEAR) > 127),
                torch.from_numpy(pad_square(object_sil.astype(np.uint8) * 255, size, Image.BILINEAR) > 127),
            ]
        ).float()
        bg = None
        if background is not None:
            bg = _to_tensor(np.asarray(Image.fromarray(background).resize((size, size), Image.BILINEAR)))[None]
        text = self.text_encoder([interaction.strip()] * k).to(device)
        cond = ImageConditions.build(
            text,
            refs[None].expand(k, -1, -1, -1, -1).to(device),
            ref_masks[None].expand(k, -1, -1, -1).to(device),
            region=region.to(device),
            masks=None if masks is None else masks.to(device),
            box=None if box_t is None else box_t.to(device),
            background=None if bg is None else bg.expand(k, -1, -1, -1).to(device),
        )
        enc = model.encode_conditions(cond, prior_strength)
        use_cfg = guidance_scale > 1.0
        uncond = model.encode_conditions(cond.dropped(text=True, human=True, object=True)) if use_cfg else None
        scheduler = make_scheduler(model)
        x = get_noise(generators, (3, size, size), device, torch.float32) * scheduler.init_noise_sigma
        x0 = denoise(model, scheduler, x, enc, uncond, num_inference_steps, guidance_scale, callback)

        images = ((x0.float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        if (out_h, out_w) != (size, size):
            images = np.stack([np.asarray(Image.fromarray(im).resize((out_w, out_h), Image.BICUBIC)) for im in images])
        if background is not None:  # composite: outside the painted pixels, exactly the given background
            painted = region  # with masks: the masks grown by composite_margin at their own size
            if layout_masks is not None:
                painted = layout_region(torch.from_numpy(np.stack([hm, om], 1)).float(), composite_margin)
            keep = F.interpolate(painted, size=(out_h, out_w), mode="nearest")[:, 0].numpy() < 0.5
            images = np.where(keep[..., None], background[None], images)
        return list(images)


@dataclass
class CHOIOutput:
    """K generated images, their masks, and everything needed to reproduce them."""

    images: list[np.ndarray]  # (H, W, 3) uint8 each
    human_masks: np.ndarray  # (K, H, W) bool
    object_masks: np.ndarray
    metadata: dict[str, Any]
    background: np.ndarray | None = None

    def mask_preview(self, k: int) -> np.ndarray:
        return mask_preview(self.human_masks[k], self.object_masks[k], self.background)

    def save(self, out_dir: str | os.PathLike, inputs: dict[str, Any] | None = None) -> list[Path]:
        """Write ``image_K.png``, ``mask_K_{human,object,preview}.png``, then ``choi.json`` last, atomically."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written, records = [], []
        for k, image in enumerate(self.images):
            files = {
                "image": (f"image_{k}.png", image),
                "human_mask": (f"mask_{k}_human.png", self.human_masks[k].astype(np.uint8) * 255),
                "object_mask": (f"mask_{k}_object.png", self.object_masks[k].astype(np.uint8) * 255),
                "mask_preview": (f"mask_{k}_preview.png", self.mask_preview(k)),
            }
            for name, array in files.values():
                atomic_write_bytes(out / name, png_bytes(array))
                written.append(out / name)
            records.append({"index": k, "seed": self.metadata["seeds"][k], **{r: f[0] for r, f in files.items()}})
        record = {"inputs": inputs or {}, **self.metadata, "images": records}
        atomic_write_bytes(out / "choi.json", (json.dumps(record, indent=2) + "\n").encode())
        return [*written, out / "choi.json"]


class CHOIPipeline:
    """Two-stage customized human–object interaction generation.

    Example:
        >>> pipe = CHOIPipeline.from_pretrained("choi-tiny")
        >>> out = pipe(human=h, object=o, interaction="a person kicking a ball", background=bg,
        ...            box=(0.2, 0.3, 0.8, 0.95), num_images=4, seed=0)
        >>> out.images[0].shape, out.metadata["seeds"]
    """

    def __init__(self, masks: MaskPipeline, renderer: ImageRenderer, model_id: str = "unsaved"):
        self.masks, self.renderer, self.model_id = masks, renderer, model_id

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike = "choi-tiny",
        device: str | torch.device = "cpu",
        torch_dtype: torch.dtype = torch.float32,
    ) -> CHOIPipeline:
        """``"choi-tiny"`` (the shipped weights) or a folder with ``mask/`` and ``image/`` model folders."""
        folder = default_model_path() if str(name_or_path) == "choi-tiny" else Path(name_or_path)
        if not folder.is_dir():
            raise ChoiError(f"model {name_or_path!r} is neither 'choi-tiny' nor a folder")
        text_encoder = TextEncoder()
        masks = MaskPipeline.from_pretrained(folder / "mask", torch_dtype=torch_dtype, text_encoder=text_encoder)
        renderer = ImageRenderer.from_pretrained(folder / "image", torch_dtype=torch_dtype, text_encoder=text_encoder)
        model_id = "choi-tiny" if str(name_or_path) == "choi-tiny" else str(folder)
        masks.model_id = f"{model_id}/mask"
        renderer.model_id = f"{model_id}/image"
        return cls(masks, renderer, model_id).to(device)

    @property
    def device(self) -> torch.device:
        return self.renderer.model.device

    def to(self, device: str | torch.device) -> CHOIPipeline:
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise ChoiError("--device cuda was asked for, but no CUDA GPU is available")
        self.masks.to(device)
        self.renderer.model.to(device)
        return self

    def generate_masks(
        self,
        human: ImageInput,
        object: ImageInput,  # noqa: A002
        interaction: str,
        background: ImageInput | None = None,
        box: str | Sequence[float] | None = None,
        num_images: int = 1,
        seed: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        fit_object: bool = True,
        layout_candidates: int | None = None,
        zoom: bool | None = None,
        callback: Callback | None = None,
    ) -> MaskPipelineOutput:
        """Stage 1 alone: K human/object mask pairs (to inspect or edit before rendering).

        These are the masks :meth:`__call__` renders in: each the best of ``layout_candidates``
        drawn layouts (:func:`draw_layouts`), and with ``fit_object`` each object mask is the object
        reference's outline fitted to stage 1's (:func:`fit_object_masks`). ``zoom``: see
        :class:`~choi.pipelines.mask.MaskPipeline` (default: whether stage 1 was trained to).
        """
        return self._stage1(
            num_inference_steps,
            guidance_scale,
            fit_object,
            layout_candidates,
            callback,
            human=human,
            object=object,
            interaction=interaction,
            background=background,
            box=box,
            num_images=num_images,
            seed=seed,
            generator=generator,
            zoom=zoom,
        )

    def _stage1(
        self,
        steps: int | None,
        guidance: float | None,
        fit_object: bool,
        candidates: int | None,
        callback: Callback | None,
        **request: Any,
    ) -> MaskPipelineOutput:
        """Stage 1's layout choice and object fit (:func:`draw_layouts`) with stage 1's own sampler
        defaults and the stage-tagged progress callback."""
        return draw_layouts(
            self.masks,
            candidates=candidates,
            fit_object=fit_object,
            num_inference_steps=MASK_STEPS if steps is None else steps,
            guidance_scale=MASK_GUIDANCE if guidance is None else guidance,
            callback=None if callback is None else (lambda i, n: callback("mask", i, n)),
            **request,
        )

    def __call__(
        self,
        human: ImageInput,
        object: ImageInput,  # noqa: A002
        interaction: str,
        background: ImageInput | None = None,
        box: str | Sequence[float] | None = None,
        mask: Any = None,
        num_images: int = 1,
        seed: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        mask_steps: int | None = None,
        mask_guidance: float | None = None,
        fit_object: bool = True,
        prior_strength: Sequence[float] | None = None,
        layout_candidates: int | None = None,
        zoom: bool | None = None,
        callback: Callback | None = None,
    ) -> CHOIOutput:
        """Generate ``num_images`` images of this person doing ``interaction`` with this object.

        ``mask`` (a (human, object) pair, a colour-coded preview, or its PNG path) skips stage 1.
        ``fit_object`` fits stage 1's object masks to the object reference's outline
        (:func:`fit_object_masks`; a user mask is used as given). ``prior_strength`` (human, object)
        is how much of each reference, stretched into its mask, stage 2 keeps as it is (default
        :data:`DEFAULT_PRIOR_STRENGTH`). Stage 1 draws ``layout_candidates`` layouts per image and
        keeps the one the object reference fits best (:func:`draw_layouts`); with a ``box`` and
        ``zoom`` (default: whether stage 1 was trained to) it draws them in a window around the box
        at its full resolution (:class:`~choi.pipelines.mask.MaskPipeline`).
        ``seed`` gives image k the seed ``seed + k``; or pass one CPU generator per image.
        """
        candidates = check_layout_candidates(layout_candidates)
        steps = DEFAULT_STEPS if num_inference_steps is None else num_inference_steps
        guidance = DEFAULT_GUIDANCE if guidance_scale is None else guidance_scale
        strength = check_prior_strength(DEFAULT_PRIOR_STRENGTH if prior_strength is None else prior_strength)
        cls_ = resolve(interaction)
        check_sampling(num_images, steps, guidance)
        box_t = parse_box(box) if box is not None else None
        bg = read_background(background)
        human_rgb, human_sil = read_reference(human, None, "human reference")
        object_rgb, object_sil = read_reference(object, None, "object reference")
        generators, seeds = make_generators(num_images, seed, generator)

        if mask is not None:
            hm, om = read_layout_mask(mask)
            if bg is not None and hm.shape != bg.shape[:2]:
                raise ChoiError(f"the mask is {hm.shape[1]}x{hm.shape[0]}, the background {bg.shape[1]}x{bg.shape[0]}")
            human_masks, object_masks = np.repeat(hm[None], num_images, 0), np.repeat(om[None], num_images, 0)
            stage1 = None
        else:
            # Stage 1 draws from its own generators (the same seeds), so a user mask changes nothing else.
            out1 = self._stage1(
                mask_steps,
                mask_guidance,
                fit_object,
                candidates,
                callback,
                human_mask=human_sil,
                object_mask=object_sil,
                interaction=interaction,
                background=bg,
                box=box_t,
                num_images=num_images,
                generator=[torch.Generator().manual_seed(s) for s in seeds],
                height=human_rgb.shape[0] if bg is None else None,
                width=human_rgb.shape[1] if bg is None else None,
                zoom=zoom,
            )
            human_masks, object_masks, stage1 = out1.human_masks, out1.object_masks, out1.metadata
        images = self.renderer(
            human_rgb,
            object_rgb,
            interaction,
            layout_masks=(human_masks, object_masks),
            box=box_t,
            background=bg,
            human_mask=human_sil,
            object_mask=object_sil,
            generators=generators,
            num_inference_steps=steps,
            guidance_scale=guidance,
            prior_strength=strength,
            callback=None if callback is None else (lambda i, n: callback("image", i, n)),
        )
        metadata = {
            "interaction": interaction,
            "interaction_class": cls_.name,
            "seeds": seeds,
            "num_images": num_images,
            "num_inference_steps": steps,
            "guidance_scale": guidance,
            "prior_strength": list(strength),
            "layout_candidates": None if mask is not None else candidates,
            "box": list(box_t) if box_t is not None else None,
            "background": bg is not None,
            "mask_source": "user" if mask is not None else "stage-1",
            "stage1": stage1,
            "model": {
                "id": self.model_id,
                "image": {"id": self.renderer.model_id, "version": self.renderer.model_version},
                "mask": {"id": self.masks.model_id, "version": self.masks.model_version},
            },
            "choi_version": __version__,
        }
        return CHOIOutput(images, human_masks, object_masks, metadata, background=bg)
