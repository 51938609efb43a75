"""The methods `choi eval` compares, behind one interface.

A method turns a :class:`Request` (what a user gives: references, interaction, optional background
and box) into an image and, when it has them, human/object masks. Oracle methods (``gt``,
``gt-mask``) are also handed the ground-truth sample; every other method never sees it.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from choi.data.schema import Box, Sample
from choi.errors import ChoiError

DEFAULT_MODEL = "choi-tiny"  # the model the two-stage, choi-tiny, single-stage and gt-mask rows run by default


@dataclass
class Request:
    """One generation request, built from a test sample without its target."""

    key: str
    human_ref: np.ndarray  # (H, W, 3) uint8
    object_ref: np.ndarray
    human_ref_mask: np.ndarray  # (H, W) bool: the reference photo's own segmentation
    object_ref_mask: np.ndarray
    interaction: str  # class name
    text: str
    background: np.ndarray | None
    box: Box | None

    @classmethod
    def from_sample(cls, s: Sample, use_background: bool = True, use_box: bool = True) -> Request:
        return cls(
            key=s.key,
            human_ref=s.human_ref,
            object_ref=s.object_ref,
            human_ref_mask=s.human_ref_mask,
            object_ref_mask=s.object_ref_mask,
            interaction=s.interaction,
            text=s.text,
            background=s.background if use_background else None,
            box=s.union_box if use_box else None,
        )


@dataclass
class MethodOutput:
    image: np.ndarray  # (H, W, 3) uint8
    human_mask: np.ndarray | None = None  # (H, W) bool
    object_mask: np.ndarray | None = None


class MethodUnavailable(RuntimeError):
    """The method cannot run here (e.g. its model is not trained yet): reported, never faked."""


@dataclass
class Method:
    name: str
    description: str
    run: Callable[[Request, Sample | None, str], MethodOutput]  # (request, sample, model)
    oracle: bool = False  # receives the ground-truth sample
    uses_model: bool = False  # runs the choi model `choi eval --model` names


def ground_truth(request: Request, sample: Sample | None, model: str = DEFAULT_MODEL) -> MethodOutput:
    assert sample is not None
    return MethodOutput(sample.image, sample.human_mask, sample.object_mask)


def _paste(canvas: np.ndarray, layer: np.ndarray, mask: np.ndarray, region: tuple[int, int, int, int]):
    """Paste the masked content of ``layer`` scaled to fit ``region`` (x1, y1, x2, y2 pixels), bottom-centred."""
    ys, xs = np.nonzero(mask)
    out_mask = np.zeros(canvas.shape[:2], bool)
    x1, y1, x2, y2 = region
    if len(xs) == 0 or x2 <= x1 or y2 <= y1:
        return out_mask
    crop = layer[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    cmask = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    scale = min((x2 - x1) / crop.shape[1], (y2 - y1) / crop.shape[0])
    w, h = max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))
    crop = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA)
    cmask = cv2.resize(cmask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    ox, oy = x1 + ((x2 - x1) - w) // 2, y2 - h
    canvas[oy : oy + h, ox : ox + w][cmask] = crop[cmask]
    out_mask[oy : oy + h, ox : ox + w] = cmask
    return out_mask


def copy_paste(request: Request, sample: Sample | None = None, model: str = DEFAULT_MODEL) -> MethodOutput:
    """References pasted side by side into the request box (whole canvas without a box)."""
    h, w = request.human_ref.shape[:2]
    canvas = request.background.copy() if request.background is not None else np.full((h, w, 3), 255, np.uint8)
    x1, y1, x2, y2 = request.box if request.box is not None else (0.05, 0.05, 0.95, 0.95)
    px = (round(x1 * w), round(y1 * h), round(x2 * w), round(y2 * h))
    mid = (px[0] + px[2]) // 2
    human = _paste(canvas, request.human_ref, request.human_ref_mask, (px[0], px[1], mid, px[3]))
    obj = _paste(canvas, request.object_ref, request.object_ref_mask, (mid, px[1], px[2], px[3]))
    return MethodOutput(canvas, human, obj & ~human)


@functools.cache
def _pipeline(model: str):
    """A choi pipeline (``"choi-tiny"`` or a folder), loaded once per process; unavailable if it cannot load."""
    from choi.pipelines.choi import CHOIPipeline

    try:
        return CHOIPipeline.from_pretrained(model)
    except ChoiError as err:
        raise MethodUnavailable(f"{model} weights cannot be loaded: {err}") from err


def request_seed(request: Request) -> int:
    """A seed fixed by the request alone: every method and every re-run draws the same noise for it."""
    return zlib.crc32(request.key.encode()) & 0x7FFFFFFF


def two_stage(request: Request, sample: Sample | None = None, model: str = DEFAULT_MODEL) -> MethodOutput:
    """``model`` (choi-tiny, or a model folder of any family, choi-sd included) end to end: stage-1
    masks, then stage 2 inside them."""
    out = _pipeline(model)(
        human=request.human_ref,
        object=request.object_ref,
        interaction=request.text,
        background=request.background,
        box=request.box,
        seed=request_seed(request),
    )
    return MethodOutput(out.images[0], out.human_masks[0], out.object_masks[0])


def _render(request: Request, masks: tuple[np.ndarray, np.ndarray] | None, model: str) -> np.ndarray:
    """choi-tiny's stage 2 alone (the references segmented as the pipeline does)."""
    import torch

    from choi.pipelines.inputs import read_reference

    pipe = _pipeline(model)
    if pipe.family != "choi-tiny":
        raise MethodUnavailable(f"{model} is a {pipe.family} model: this row runs choi-tiny's stage 2 alone")
    human, human_sil = read_reference(request.human_ref, None, "human")
    obj, object_sil = read_reference(request.object_ref, None, "object")
    return pipe.image_stage.renderer(
        human, human_sil, obj, object_sil, request.text, [torch.Generator().manual_seed(request_seed(request))],
        layout_masks=masks,
        box=request.box if request.box is not None or masks is not None else (0.0, 0.0, 1.0, 1.0),
        background=request.background,
    )[0]  # fmt: skip


def single_stage(request: Request, sample: Sample | None = None, model: str = DEFAULT_MODEL) -> MethodOutput:
    """Stage 2 with the box alone (no masks): the AnyDoor-like setting the paper compares against."""
    return MethodOutput(_render(request, None, model))


def gt_mask(request: Request, sample: Sample | None = None, model: str = DEFAULT_MODEL) -> MethodOutput:
    """Stage 2 given the true masks: an upper bound for stage 2."""
    assert sample is not None
    image = _render(request, (sample.human_mask[None], sample.object_mask[None]), model)
    return MethodOutput(image, sample.human_mask, sample.object_mask)


def available_methods() -> dict[str, Method]:
    """Every method `choi eval` knows, in the order of the report table."""
    return {
        "gt": Method("gt", "ground-truth HOI-World renders (ceiling)", ground_truth, oracle=True),
        "choi-tiny": Method("choi-tiny", "two-stage choi-tiny", two_stage, uses_model=True),
        "two-stage": Method("two-stage", "the two-stage pipeline of --model, any family", two_stage, uses_model=True),
        # the same row under the name a choi-sd user looks for (`choi eval --methods choi-sd --model models/sd`)
        "choi-sd": Method("choi-sd", "choi-sd's two stages (--model: a choi-sd folder)", two_stage, uses_model=True),
        "single-stage": Method(
            "single-stage", "choi-tiny stage 2 with the box only (AnyDoor-like)", single_stage, uses_model=True
        ),
        "gt-mask": Method(
            "gt-mask", "choi-tiny stage 2 given the true masks (oracle)", gt_mask, oracle=True, uses_model=True
        ),
        "copy-paste": Method("copy-paste", "references pasted into the request box", copy_paste),
    }
