"""Where the person and the object are in a generated image, found by choi's own segmenters.

The DINO / CLIP identity metrics compare each reference with the region of the generated image that
shows the same role, and box adherence on data without a background needs the drawn pair's box.
Both come from the image itself and the request's box, never from ground-truth masks:

- person: MediaPipe person segmentation (:class:`~choi.data.realdata.PersonSegmenter`) on the whole
  image, so a person drawn outside the box is still found where it is;
- object: GrabCut in the request's box (the whole image without one), the person's pixels starting
  as probable background (:func:`~choi.data.realdata.grabcut_mask`), as `choi data hico` does.

Each found region is cut out and centred on the references' plain background by
:func:`~choi.data.realdata.reference`, the function that made the dataset's own references, so a
region and its reference differ in what was drawn, not in framing. A role that is not found is
scored on the request's box crop (the whole image without a box) and counted in ``found``.

Example:
    >>> regions = find_regions(images, boxes)  # doctest: +SKIP
    >>> regions.human_found.mean(), regions.boxes[0]  # doctest: +SKIP
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from choi.data.realdata import reference
from choi.data.schema import Box, mask_box
from choi.data.segmenters import PersonSegmenter, grabcut_mask
from choi.evaluation.metrics import box_to_pixels
from choi.world.palette import REFERENCE_FILL

# References are cut with the subject filling this much of the square (see realdata.assemble_sample).
HUMAN_FILL, OBJECT_FILL = REFERENCE_FILL["human"], REFERENCE_FILL["object"]
MIN_REGION = 0.002  # least fraction of the image a found region covers; less is a speck, not a subject

PersonMask = Callable[[np.ndarray], np.ndarray | None]  # image -> (H, W) bool, None when no person


@dataclass
class Regions:
    """Per image: the person and object cut-outs, whether each was found, and the found pair's box."""

    human: list[np.ndarray]  # (S, S, 3) uint8 cut-outs, or the box crop when not found
    object: list[np.ndarray]
    human_found: np.ndarray  # (N,) bool
    object_found: np.ndarray  # (N,) bool
    boxes: list[Box | None]  # normalised box of the found person ∪ object; None when neither was found


def _crop(image: np.ndarray, box: Box | None) -> np.ndarray:
    if box is None:
        return image
    x1, y1, x2, y2 = box_to_pixels(box, *image.shape[:2])
    return image[y1:y2, x1:x2] if x2 > x1 and y2 > y1 else image


def _union(*boxes: Box) -> Box | None:
    if not boxes:
        return None
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def find_regions(
    images: Sequence[np.ndarray], boxes: Sequence[Box | None], person: PersonMask | None = None
) -> Regions:
    """Segment the person and the object in each ``(H, W, 3)`` uint8 image; ``boxes`` are the requests'.

    ``person`` replaces MediaPipe (a function image -> mask or None); by default one
    :class:`~choi.data.realdata.PersonSegmenter` serves every image.
    """
    if len(images) != len(boxes):
        raise ValueError(f"got {len(images)} images but {len(boxes)} boxes")
    if person is None:
        with PersonSegmenter() as people:
            return find_regions(images, boxes, lambda im: _mediapipe(people, im))
    out = Regions([], [], np.zeros(len(images), bool), np.zeros(len(images), bool), [])
    pairs = zip(images, boxes, strict=True)
    for i, (image, box) in enumerate(tqdm(pairs, "segmenting", len(images), disable=not sys.stderr.isatty())):
        h, w = image.shape[:2]
        side, least = max(h, w), MIN_REGION * h * w
        human_mask = person(image)
        human_mask = human_mask if human_mask is not None and human_mask.sum() >= least else np.zeros((h, w), bool)
        x1, y1, x2, y2 = box_to_pixels(box, h, w) if box is not None else (0, 0, w, h)
        object_mask = grabcut_mask(image, (x1, y1, x2, y2), exclude=human_mask) & ~human_mask
        human_ok, object_ok = bool(human_mask.sum() >= least), bool(object_mask.sum() >= least)
        out.human_found[i], out.object_found[i] = human_ok, object_ok
        out.human.append(reference(image, human_mask, side, HUMAN_FILL)[0] if human_ok else _crop(image, box))
        out.object.append(reference(image, object_mask, side, OBJECT_FILL)[0] if object_ok else _crop(image, box))
        found = [mask_box(m) for m, ok in ((human_mask, human_ok), (object_mask, object_ok)) if ok]
        out.boxes.append(_union(*found))
    return out


def _mediapipe(people: PersonSegmenter, image: np.ndarray) -> np.ndarray | None:
    result = people(np.ascontiguousarray(image), (0, 0, image.shape[1], image.shape[0]))
    return None if result is None else result.mask
