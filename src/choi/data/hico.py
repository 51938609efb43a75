"""Build a CHOI dataset from HICO-DET-format images: one sample per annotated human-object interaction.

Input: a folder of images and annotations in the widely used HICO-DET JSON layout, a list of

    {"file_name": "HICO_train2015_00000001.jpg",
     "annotations": [{"bbox": [x1, y1, x2, y2], "category_id": 1}, ...],      # pixels, COCO ids
     "hoi_annotation": [{"subject_id": 0, "object_id": 1, "category_id": 73}]}  # 1-based verb id

Per interaction: the person mask and 14 keypoints come from MediaPipe on the person box, the object
mask from GrabCut in the object box (or SAM). HICO-DET has one pose per pair, so the references are
cut from the *same* image (``pair_source: same_image``): training can tell these from true
different-pose pairs. Labels keep the HICO-DET verb and object; ``interaction`` is choi's class
when choi has one (``kick`` + ``sports_ball`` → ``kick_ball``), else the HICO-DET HOI name.

Example:
    >>> build_hico("data/hico", HicoConfig(images="hico/images/train2015", annotations="trainval_hico.json"))
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from choi.data import hico_classes as hc
from choi.data.realbuild import BuildSpec, parse_shard, run_build
from choi.data.realdata import (
    Observation,
    QualityConfig,
    Rejected,
    assemble_sample,
    check_box,
    check_mask,
    check_person,
    read_rgb,
)
from choi.data.schema import Sample
from choi.data.segmenters import PersonSegmenter, check_sam, object_segmenter
from choi.data.shards import file_sha256
from choi.errors import ChoiError
from choi.vocabulary import BY_NAME

log = logging.getLogger(__name__)

GENERATOR = "hico"
SPLITS = ("train", "test")
RESOLUTIONS = (64, 128, 256, 512)


@dataclass(frozen=True)
class HicoConfig:
    """Arguments of one split's build; all but the paths' spelling are recorded in the manifest."""

    images: str  # folder the annotations' file names are relative to
    annotations: str  # HICO-DET JSON annotation file
    split: str = "train"
    resolution: int = 256  # side of the square target and references
    shard_size: int = 64  # interactions per shard: a unit of resumable work (~1 min on one core)
    sam_checkpoint: str | None = None  # SAM weights for object masks; GrabCut when None
    sam_model_type: str | None = None  # vit_h / vit_l / vit_b; guessed from the file name when None
    quality: QualityConfig = field(default_factory=QualityConfig)

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ChoiError(f"--split must be one of {', '.join(SPLITS)}, got '{self.split}'")
        if self.resolution not in RESOLUTIONS:
            raise ChoiError(f"--resolution must be one of {RESOLUTIONS}, got {self.resolution}")
        if self.shard_size <= 0:
            raise ChoiError(f"--shard-size must be positive, got {self.shard_size}")
        if not Path(self.images).is_dir():
            raise ChoiError(f"--images {self.images} is not a folder")
        if not Path(self.annotations).is_file():
            raise ChoiError(f"--annotations {self.annotations} does not exist")
        if self.sam_checkpoint is not None:
            check_sam(self.sam_checkpoint, self.sam_model_type)


# --- annotations → items -------------------------------------------------------------------------


def load_annotations(path: str | os.PathLike) -> list[Any]:
    """The top-level list of a HICO-DET JSON file; a file that is not one raises :class:`ChoiError`."""
    try:
        data = json.loads(Path(path).read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ChoiError(f"--annotations {path} is not readable JSON ({str(err).splitlines()[0]})") from err
    if not isinstance(data, list):
        raise ChoiError(f"--annotations {path} must hold a JSON list of images, got {type(data).__name__}")
    return data


def _box(value: Any) -> tuple[float, float, float, float]:
    if not (isinstance(value, list | tuple) and len(value) == 4 and all(isinstance(v, int | float) for v in value)):
        raise ValueError(f"bbox must be [x1, y1, x2, y2], got {value!r}")
    x1, y1, x2, y2 = (float(v) for v in value)
    if not (np.isfinite([x1, y1, x2, y2]).all() and x2 > x1 and y2 > y1):
        raise ValueError(f"bbox must have x2 > x1 and y2 > y1, got {value!r}")
    return x1, y1, x2, y2


def _interaction(entry: dict[str, Any], hoi: Any) -> dict[str, Any]:
    """The item for one ``hoi_annotation``: boxes and names; raises ValueError when malformed."""
    if not isinstance(hoi, dict):
        raise ValueError("hoi_annotation entries must be objects")
    boxes = entry.get("annotations")
    if not isinstance(boxes, list):
        raise ValueError("missing 'annotations' list")
    ids = {}
    for role in ("subject_id", "object_id", "category_id"):
        if not isinstance(hoi.get(role), int) or isinstance(hoi.get(role), bool):
            raise ValueError(f"hoi_annotation needs an integer '{role}'")
        ids[role] = hoi[role]
    for role in ("subject_id", "object_id"):
        if not 0 <= ids[role] < len(boxes) or not isinstance(boxes[ids[role]], dict):
            raise ValueError(f"{role} {ids[role]} is not an index into 'annotations' ({len(boxes)} boxes)")
    subject, obj = boxes[ids["subject_id"]], boxes[ids["object_id"]]
    if subject.get("category_id") != hc.PERSON_ID:
        raise ValueError(f"subject {ids['subject_id']} is not a person (category_id {subject.get('category_id')})")
    obj_name = hc.object_name(obj.get("category_id")) if isinstance(obj.get("category_id"), int) else None
    verb = hc.verb_name(ids["category_id"])
    if obj_name is None:
        raise ValueError(f"object category_id {obj.get('category_id')!r} is not one of the 80 COCO ids")
    if verb is None:
        raise ValueError(f"verb category_id {ids['category_id']} is not in 1..{len(hc.VERBS)}")
    return {
        "human_box": _box(subject.get("bbox")),
        "object_box": _box(obj.get("bbox")),
        "verb": verb,
        "object": obj_name,
        "subject_id": ids["subject_id"],
        "object_id": ids["object_id"],
        "hoi_category_id": hoi.get("hoi_category_id"),
    }


def plan_items(entries: list[Any]) -> list[dict[str, Any]]:
    """One item per interaction, in file order; malformed entries become items carrying ``error``."""
    items: list[dict[str, Any]] = []
    for e, entry in enumerate(entries):
        name = entry.get("file_name") if isinstance(entry, dict) else None
        where = {"entry": e, "file": name if isinstance(name, str) else None}
        if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
            items.append({**where, "hoi": None, "error": "entry needs a relative 'file_name'"})
            continue
        hois = entry.get("hoi_annotation")
        if not isinstance(hois, list):
            items.append({**where, "hoi": None, "error": "missing 'hoi_annotation' list"})
            continue
        for h, hoi in enumerate(hois):
            try:
                items.append({**where, "hoi": h, **_interaction(entry, hoi)})
            except ValueError as err:
                items.append({**where, "hoi": h, "error": str(err)})
    return items


# --- items → samples ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _UnitConfig:
    """What the workers need: the config and the per-class counts (for the rare flag)."""

    cfg: HicoConfig
    hoi_instances: dict[str, int]


def _labels(item: dict[str, Any], instances: dict[str, int], split: str) -> dict[str, Any]:
    verb, obj = item["verb"], item["object"]
    choi = hc.choi_class(verb, obj)
    cls = BY_NAME[choi] if choi is not None else None
    category = cls.object if cls is not None and cls.object is not None else hc.choi_object(obj)
    hoi = hc.hoi_name(verb, obj)
    n = instances.get(hoi, 0)
    return {
        "interaction": choi if choi is not None else hoi,
        "text": cls.phrase(category) if cls is not None else f"a person: {hc.hoi_text(verb, obj)}",
        "object_category": category,
        "meta": {
            "hico_verb": verb,
            "hico_object": obj,
            "hico_hoi": hoi,
            "hico_hoi_category_id": item.get("hoi_category_id"),
            "choi_class": choi,
            # Rarity is defined on training counts: only a train build can tell.
            "hico_train_instances": n if split == "train" else None,
            "hico_rare": (n < hc.RARE_THRESHOLD) if split == "train" else None,
        },
    }


def process_unit(
    ucfg: _UnitConfig, k: int, items: list[dict[str, Any]], progress: Callable[[int], Any]
) -> tuple[list[Sample], list[dict[str, Any]]]:
    """Samples and rejects of unit ``k`` (its ``items``); masks are shared between a pair's verbs."""
    cfg, q = ucfg.cfg, ucfg.cfg.quality
    segment_object = object_segmenter(cfg.sam_checkpoint, cfg.sam_model_type)
    samples: list[Sample] = []
    rejects: list[dict[str, Any]] = []
    images: dict[str, np.ndarray | Rejected] = {}  # this unit's images: items of one file are adjacent
    pairs: dict[tuple, Observation | Rejected] = {}
    with PersonSegmenter() as people:
        for j, item in enumerate(items):
            index = k * cfg.shard_size + j
            where = {"item": index, "file": item["file"], "entry": item["entry"], "hoi": item["hoi"]}
            try:
                if "error" in item:
                    raise Rejected("malformed_annotation", item["error"])
                pair_key = (item["file"], item["subject_id"], item["object_id"])
                if pair_key not in pairs:
                    pairs[pair_key] = _observe(cfg, item, images, people, segment_object, q)
                obs = pairs[pair_key]
                if isinstance(obs, Rejected):
                    raise obs
                labels = _labels(item, ucfg.hoi_instances, cfg.split)
                meta = {**labels.pop("meta"), "file_name": item["file"], "hoi_index": item["hoi"]}
                meta["image_size"] = list(obs.image.shape[:2])
                key = f"hico-{cfg.split}-{index:08d}"
                sample = assemble_sample(
                    key, obs, obs, cfg.resolution, source="hico", pair_source="same_image", meta=meta, **labels
                )
                samples.append(sample)
            except Rejected as rej:
                rejects.append({**where, "reason": rej.reason, "detail": rej.detail})
            progress(1)
    return samples, rejects


def _observe(cfg, item, images, people, segment_object, q: QualityConfig) -> Observation | Rejected:
    """Masks and keypoints of one human-object pair of one image, or why it was rejected."""
    try:
        name = item["file"]
        if name not in images:
            images.clear()  # one image at a time: a unit can span thousands of files
            try:
                images[name] = read_rgb(Path(cfg.images) / name)
            except Rejected as rej:
                images[name] = rej
        image = images[name]
        if isinstance(image, Rejected):
            raise image
        hb, ob = item["human_box"], item["object_box"]
        check_box(hb, image.shape, "person", q)
        check_box(ob, image.shape, "object", q)
        person = check_person(people(image, hb), hb, q)
        object_mask = segment_object(image, ob, exclude=person.mask)
        check_mask(object_mask, ob, "object", q)
        return Observation(image, person.mask, object_mask, hb, ob, person.keypoints)
    except Rejected as rej:
        return rej


def _generator_version(cfg: HicoConfig) -> str:
    import cv2
    import mediapipe

    objects = f"SAM {cfg.sam_model_type or 'auto'}" if cfg.sam_checkpoint else f"GrabCut (OpenCV {cv2.__version__})"
    return f"MediaPipe {mediapipe.__version__} pose+segmentation; {objects}"


def build_hico(out: str | os.PathLike, cfg: HicoConfig, workers: int = 1, shard: str | None = None) -> dict[str, Any]:
    """Build (or complete) split ``cfg.split`` of the dataset in ``out``; returns the build summary."""
    shard_spec = parse_shard(shard)
    items = plan_items(load_annotations(cfg.annotations))
    if not items:
        raise ChoiError(f"--annotations {cfg.annotations} lists no interactions")
    instances = hc.hoi_counts((it["verb"], it["object"]) for it in items if "error" not in it)
    units = [items[i : i + cfg.shard_size] for i in range(0, len(items), cfg.shard_size)]
    args = {
        "builder": "choi.data.hico",
        "annotations_sha256": file_sha256(cfg.annotations),
        "resolution": cfg.resolution,
        "shard_size": cfg.shard_size,
        "objects": "sam" if cfg.sam_checkpoint else "grabcut",
        "quality": cfg.quality.to_dict(),
    }
    spec = BuildSpec(
        generator=GENERATOR,
        generator_version=_generator_version(cfg),
        split=cfg.split,
        resolution=cfg.resolution,
        num_units=len(units),
        builder_args=args,
        card=(
            f"CHOI samples from HICO-DET-format images ({cfg.resolution}x{cfg.resolution} crops around each pair). "
            "Person masks and keypoints: MediaPipe; object masks: "
            f"{'SAM' if cfg.sam_checkpoint else 'GrabCut'} in the annotated box. References are cut from the "
            "same image (pair_source: same_image): same pose as the target, unlike true different-pose pairs. "
            "Labels keep the HICO-DET verb/object in meta; interaction is choi's class where one exists."
        ),
    )
    return run_build(
        out, spec, process_unit, _UnitConfig(cfg, dict(instances)), units=units, shard=shard_spec, workers=workers
    )
