"""choi-tiny as a model family: its options and its two stages behind the pipeline's protocols.

Its HOI-World tricks live here and nowhere else: the layout choice (several stage-1 layouts, the
one the object reference fits best kept), the object fit (object masks replaced by the reference's
own outline), the zoom (stage 1 drawn in a window around the box), the warp prior's strength and
the composite margin.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from choi.data.realdata import reference
from choi.data.segment import Reference
from choi.errors import ChoiError, quote
from choi.models.conditioning import snap_silhouettes
from choi.models.image_generator import check_prior_strength
from choi.pipelines.inputs import pad_square, read_layout_mask
from choi.pipelines.request import MAX_IMAGES
from choi.pipelines.sampling import seeded_generators
from choi.pipelines.stages import Callback, Layouts, StageInputs, check_number
from choi.pipelines.tiny.mask import DEFAULT_GUIDANCE as MASK_GUIDANCE
from choi.pipelines.tiny.mask import DEFAULT_STEPS as MASK_STEPS
from choi.pipelines.tiny.mask import MaskPipeline, MaskPipelineOutput, check_strength
from choi.pipelines.tiny.render import DEFAULT_GUIDANCE, DEFAULT_STEPS, ImageRenderer
from choi.vocabulary import match_interaction
from choi.world.palette import REFERENCE_FILL

OBJECT_FIT_TURNS = (
    48  # the turns (of 360°, mirrored or not) tried when fitting the outline (docs/experiments.md#object-fit)
)
OBJECT_FIT_SIZE = 128  # working size of that search
MAX_LAYOUT_CANDIDATES = 64

log = logging.getLogger(__name__)


def frame_reference(ref: Reference, role: str, side: int) -> tuple[np.ndarray, np.ndarray]:
    """A photo's cut-out framed as a HOI-World reference (and as `choi data hico|video` frames theirs):
    centred on the plain reference colour, ``side`` px square. A plain-background reference already is one."""
    if ref.rule == "plain-background":
        return ref.rgb, ref.silhouette
    return reference(ref.rgb, ref.silhouette, side, REFERENCE_FILL[role])


@dataclass(frozen=True)
class TinyOptions:
    """choi-tiny's own options (``--set key=value``; ``options={...}``), with their defaults."""

    fit_object: bool = True  # object masks become the reference's fitted outline (docs/experiments.md#object-fit)
    prior_strength: tuple[float, float] = (0.5, 1.0)  # (human, object) warp prior kept (#prior-strength)
    layout_candidates: int = 4  # stage-1 layouts drawn per image, the best-fitting kept (#layout-choice)
    zoom: bool | None = None  # stage 1 in a window around the box; None: as the mask model was trained (#zoom)
    composite_margin: float = 1 / 128  # background kept beyond this fraction of the side (#composite)
    init_mask: Any = None  # a layout sketch (colour-coded image or path) stage 1 redraws instead of drawing anew
    strength: float = 0.75  # how far towards noise the sketch is taken before the redraw, in (0, 1]

    def __post_init__(self) -> None:
        if not isinstance(self.fit_object, bool):
            raise ChoiError(f"option fit_object must be true or false, got {quote(self.fit_object)}")
        object.__setattr__(self, "prior_strength", check_prior_strength(self.prior_strength))
        check_number("option layout_candidates", self.layout_candidates, 1, MAX_LAYOUT_CANDIDATES, integer=True)
        if self.zoom is not None and not isinstance(self.zoom, bool):
            raise ChoiError(f"option zoom must be true, false or none, got {quote(self.zoom)}")
        check_number("option composite_margin", self.composite_margin, 0, 0.5)
        check_strength(self.strength, "option strength")


def snap_objects(
    human_masks: np.ndarray, object_masks: np.ndarray, object_silhouette: np.ndarray, turns: int = OBJECT_FIT_TURNS
) -> np.ndarray:
    """Stage 1's (K, H, W) object masks → the object reference's silhouette fitted to each, where the person is not.

    The object is rigid, so its mask is the reference's own outline, turned and stretched onto the
    stage-1 mask's box (the turn that overlaps it best), minus the person, who is in front. May be empty.
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
    return _fitted_or_drawn(snap_objects(human_masks, object_masks, object_silhouette, turns), object_masks)


def _fitted_or_drawn(fitted: np.ndarray, drawn: np.ndarray) -> np.ndarray:
    """Per image, the fitted object mask, or the drawn one where the fit left nothing."""
    return np.where(fitted.any((1, 2))[:, None, None], fitted, drawn)


def draw_layouts(
    masks: MaskPipeline,
    generators: list[torch.Generator],
    object_silhouette: np.ndarray,
    candidates: int = 4,
    fit_object: bool = True,
    **request: Any,
) -> MaskPipelineOutput:
    """Stage 1 with its layout choice: ``candidates`` layouts per image, the best-fitting one kept.

    Image k's candidates are the first noise draws of its own generator (the first is what one
    candidate gives), so image k still depends on its seed alone. Each is scored by the IoU of its
    object mask (where the person is not) with the object reference's outline fitted to it
    (:func:`snap_objects`); with ``fit_object`` the kept object mask is that fitted outline.
    ``request`` holds the mask pipeline's other arguments.
    """
    num_images = len(generators)
    draws = [g for g in generators for _ in range(candidates)]
    # At most MAX_IMAGES draws per call, what one request may ask of stage 1: memory stays bounded for any
    # num_images x candidates, and each generator is drawn from in the same order as in one call.
    parts = [masks(**request, object_mask=object_silhouette, generator=draws[i : i + MAX_IMAGES],
                   num_images=len(draws[i : i + MAX_IMAGES])) for i in range(0, len(draws), MAX_IMAGES)]  # fmt: skip
    out = _concatenate(parts)
    meta = {**out.metadata, "seeds": out.metadata["seeds"][::candidates], "num_images": num_images,
            "layout_candidates": candidates}  # fmt: skip
    if candidates == 1 and not fit_object:
        return replace(out, metadata=meta)
    fitted = snap_objects(out.human_masks, out.object_masks, object_silhouette)
    drawn = out.object_masks & ~out.human_masks
    iou = (fitted & drawn).sum((1, 2)) / np.maximum((fitted | drawn).sum((1, 2)), 1)
    best = iou.reshape(num_images, candidates).argmax(1) + np.arange(num_images) * candidates
    object_masks = out.object_masks
    meta["layout_scores"] = [round(float(v), 4) for v in iou[best]]
    if fit_object:  # the fitted outline, or stage 1's own mask where the fit leaves nothing
        object_masks = _fitted_or_drawn(fitted, object_masks)
        meta["object_fit_turns"] = OBJECT_FIT_TURNS
    return replace(
        out, human_masks=out.human_masks[best], object_masks=object_masks[best], soft=out.soft[best], metadata=meta
    )


def _concatenate(parts: list[MaskPipelineOutput]) -> MaskPipelineOutput:
    """One output of several stage-1 calls, in order."""

    def stack(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts])

    seeds = [seed for p in parts for seed in p.metadata["seeds"]]
    return replace(parts[0], human_masks=stack("human_masks"), object_masks=stack("object_masks"), soft=stack("soft"),
                   metadata={**parts[0].metadata, "seeds": seeds, "num_images": len(seeds)})  # fmt: skip


class TinyMaskStage:
    """choi-tiny's stage 1 (:class:`~choi.pipelines.tiny.mask.MaskPipeline`) with its layout choice and object fit."""

    def __init__(self, masks: MaskPipeline):
        self.masks = masks

    def to(self, device: str | torch.device) -> TinyMaskStage:
        self.masks.to(device)
        return self

    def __call__(
        self, inputs: StageInputs, steps: int | None, guidance: float | None, options: TinyOptions,
        callback: Callback | None,
    ) -> Layouts:  # fmt: skip
        init = None
        if options.init_mask is not None:
            init = read_layout_mask(options.init_mask)
            if init[0].shape != (inputs.height, inputs.width):
                init = tuple(np.asarray(Image.fromarray(m).resize((inputs.width, inputs.height))) for m in init)
        out = draw_layouts(
            self.masks,
            seeded_generators(inputs.seeds),
            inputs.object_silhouette,
            candidates=options.layout_candidates,
            fit_object=options.fit_object,
            human_mask=inputs.human_silhouette,
            reference_images=(inputs.human, inputs.object),  # read by a mask model with identity tokens only
            interaction=inputs.interaction,
            background=inputs.background,
            box=inputs.box,
            height=inputs.height,
            width=inputs.width,
            zoom=options.zoom,
            init_masks=init,
            strength=options.strength,
            num_inference_steps=MASK_STEPS if steps is None else steps,
            guidance_scale=MASK_GUIDANCE if guidance is None else guidance,
            callback=None if callback is None else (lambda i, n: callback("mask", i, n)),
        )
        drop = (
            "seeds",
            "num_images",
            "interaction",
            "interaction_class",
            "box",
            "background",
            "height",
            "width",
            "choi_version",
        )  # fmt: skip - the pipeline records these once
        return Layouts(out.human_masks, out.object_masks, {k: v for k, v in out.metadata.items() if k not in drop})


class TinyImageStage:
    """choi-tiny's stage 2 (:class:`~choi.pipelines.tiny.render.ImageRenderer`)."""

    def __init__(self, renderer: ImageRenderer):
        self.renderer = renderer
        self.default_size = renderer.model.config.sample_size

    def to(self, device: str | torch.device) -> TinyImageStage:
        self.renderer.model.to(device)
        self.renderer.text_encoder.to(device)
        return self

    def check_interaction(self, text: str) -> dict[str, Any]:
        """choi-tiny knows 25 interactions: another phrasing is drawn as the nearest one (MiniLM similarity)."""
        match = match_interaction(text, self.renderer.text_encoder)
        record = {"interaction_class": match.cls.name, "interaction_similarity": round(match.similarity, 3)}
        if not match.exact:
            log.warning("choi-tiny does not know %r: drawing it as '%s', the nearest interaction it knows "
                        "(similarity %.2f)", text.strip()[:60], match.cls.text, match.similarity)  # fmt: skip
            record["text"] = match.cls.text
        return record

    def prepare_reference(self, role: str, ref: Reference) -> tuple[np.ndarray, np.ndarray]:
        return frame_reference(ref, role, self.default_size)

    def __call__(
        self, inputs: StageInputs, layouts: Layouts, steps: int | None, guidance: float | None, options: TinyOptions,
        callback: Callback | None,
    ) -> tuple[list[np.ndarray], dict[str, Any]]:  # fmt: skip
        steps = DEFAULT_STEPS if steps is None else steps
        guidance = DEFAULT_GUIDANCE if guidance is None else guidance
        images = self.renderer(
            inputs.human,
            inputs.human_silhouette,
            inputs.object,
            inputs.object_silhouette,
            inputs.interaction,
            seeded_generators(inputs.seeds),
            layout_masks=(layouts.human_masks, layouts.object_masks),
            background=inputs.background,
            num_inference_steps=steps,
            guidance_scale=guidance,
            prior_strength=options.prior_strength,
            composite_margin=options.composite_margin,
            callback=None if callback is None else (lambda i, n: callback("image", i, n)),
        )
        model = {"id": self.renderer.model_id, "version": self.renderer.model_version}
        return images, {"steps": steps, "guidance": guidance, "model": model}
