"""Build CHOI samples from a video of one human-object pair: the same pair in different poses.

1. Decode (PyAV) and sample frames at ``sample_fps``.
2. Follow the pair: the person with MediaPipe on a box that follows their mask from frame to frame,
   the object with an OpenCV tracker started from the first-frame box (or the per-frame boxes of a
   JSON file). Frames failing a quality filter (no pose, low pose or tracking confidence) are
   rejected; the plan of frames and pairs is saved so a resumed build uses the same one.
3. Mine pairs ``(i, j)`` at least ``min_gap`` seconds apart whose poses differ by at least
   ``min_pose_distance``: the references come from frame ``i``, the target from frame ``j``
   (``pair_source: video``) — what teaches a model to separate identity from interaction.

Boxes given by the user are normalised ``x1,y1,x2,y2`` in [0, 1], as everywhere in choi.

Example:
    >>> cfg = VideoConfig(video="clip.mp4", interaction="ride bicycle", first_boxes="0.1,0.2,0.4,0.9:0.05,0.5,0.6,0.95")
    >>> build_video("data/video", cfg)
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from choi.data.realbuild import PARTS, BuildSpec, parse_shard, prepare_folder, run_build, safe_key_part
from choi.data.realdata import (
    Observation,
    QualityConfig,
    Rejected,
    assemble_sample,
    check_mask,
    pose_distance,
)
from choi.data.schema import Sample
from choi.data.segmenters import PersonSegmenter, PixelBox, check_sam, object_segmenter
from choi.data.shards import file_sha256
from choi.errors import ChoiError
from choi.io import atomic_write_text
from choi.vocabulary import UnknownInteractionError, resolve

log = logging.getLogger(__name__)

GENERATOR = "video"
SPLITS = ("train", "test")
RESOLUTIONS = (64, 128, 256, 512)
Box = tuple[float, float, float, float]


def parse_box(text: str, what: str) -> Box:
    """A normalised ``x1,y1,x2,y2`` box; :class:`ChoiError` unless 0 <= x1 < x2 <= 1 (same for y)."""
    try:
        x1, y1, x2, y2 = (float(v) for v in str(text).split(","))
    except ValueError as err:
        raise ChoiError(f"{what} must be x1,y1,x2,y2 (normalised), got '{text}'") from err
    if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
        raise ChoiError(f"{what} must have 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1, got '{text}'")
    return x1, y1, x2, y2


def parse_first_boxes(text: str) -> tuple[Box, Box]:
    parts = str(text).split(":")
    if len(parts) != 2:
        raise ChoiError(f"--first-boxes must be PERSON:OBJECT, each x1,y1,x2,y2, got '{text}'")
    return parse_box(parts[0], "--first-boxes person box"), parse_box(parts[1], "--first-boxes object box")


def load_boxes_file(path: str | os.PathLike) -> dict[int, tuple[Box, Box]]:
    """``{frame: (person box, object box)}`` from a JSON list of ``{"frame", "person", "object"}``."""
    try:
        data = json.loads(Path(path).read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ChoiError(f"--boxes {path} is not a readable JSON file ({str(err).splitlines()[0]})") from err
    if not isinstance(data, list) or not data:
        raise ChoiError(f'--boxes {path} must be a non-empty JSON list of {{"frame", "person", "object"}}')
    boxes = {}
    for n, entry in enumerate(data):
        if not isinstance(entry, dict) or not isinstance(entry.get("frame"), int) or entry["frame"] < 0:
            raise ChoiError(f"--boxes {path}: entry {n} needs a non-negative integer 'frame'")
        person, obj = (",".join(str(v) for v in entry.get(k) or []) for k in ("person", "object"))
        boxes[entry["frame"]] = (
            parse_box(person, f"--boxes entry {n} person"),
            parse_box(obj, f"--boxes entry {n} object"),
        )
    return boxes


@dataclass(frozen=True)
class VideoConfig:
    """Arguments of one video's build; everything but the file's spelling is recorded in the manifest."""

    video: str
    interaction: str  # free text, resolved with choi's vocabulary when it names a known class
    object_category: str | None = None  # default: the interaction's object
    first_boxes: str | None = None  # "x1,y1,x2,y2:x1,y1,x2,y2" person:object in the first frame
    boxes: str | None = None  # JSON file of per-frame boxes (instead of tracking)
    sample_fps: float = 5.0  # frames looked at per second: neighbours closer than this barely differ
    min_gap: float = 1.0  # seconds between the frames of a pair
    min_pose_distance: float = 0.03  # mean joint displacement / person size (see realdata.pose_distance)
    max_pairs: int = 50
    split: str = "train"
    resolution: int = 256
    shard_size: int = 32  # pairs per shard
    sam_checkpoint: str | None = None
    sam_model_type: str | None = None
    quality: QualityConfig = field(default_factory=QualityConfig)

    def __post_init__(self) -> None:
        if not Path(self.video).is_file():
            raise ChoiError(f"--video {self.video} does not exist")
        if (self.first_boxes is None) == (self.boxes is None):
            raise ChoiError("give exactly one of --first-boxes and --boxes")
        if self.first_boxes is not None:
            parse_first_boxes(self.first_boxes)
        else:
            load_boxes_file(self.boxes)
        for name, value, low in (("--sample-fps", self.sample_fps, 0.0), ("--max-pairs", self.max_pairs, 0)):
            if not value > low:
                raise ChoiError(f"{name} must be positive, got {value}")
        if self.min_gap < 0 or self.min_pose_distance < 0:
            raise ChoiError("--min-gap and --min-pose-distance must be >= 0")
        if self.split not in SPLITS:
            raise ChoiError(f"--split must be one of {', '.join(SPLITS)}, got '{self.split}'")
        if self.resolution not in RESOLUTIONS:
            raise ChoiError(f"--resolution must be one of {RESOLUTIONS}, got {self.resolution}")
        if self.shard_size <= 0:
            raise ChoiError(f"--shard-size must be positive, got {self.shard_size}")
        if not self.interaction.strip():
            raise ChoiError("--interaction must not be empty")
        if self.sam_checkpoint is not None:
            check_sam(self.sam_checkpoint, self.sam_model_type)

    def labels(self) -> dict[str, str]:
        """interaction / text / object_category: choi's class when the text names one, else the text."""
        try:
            cls = resolve(self.interaction)
        except UnknownInteractionError:
            cls = None
        category = self.object_category or (cls.object if cls is not None else None)
        if category is None:
            raise ChoiError(f"'{self.interaction}' names no known object: give --object")
        if cls is not None and cls.object in (None, category):
            return {"interaction": cls.name, "text": cls.phrase(category), "object_category": category}
        name = "_".join(self.interaction.lower().split())
        return {"interaction": name, "text": f"a person: {self.interaction.strip()}", "object_category": category}


# --- decoding ----------------------------------------------------------------------------------


def sampled_frames(
    path: str | os.PathLike, sample_fps: float, wanted: set[int] | None = None
) -> Iterator[tuple[int, float, np.ndarray]]:
    """``(frame index, seconds, RGB)`` of the frames sampled at ``sample_fps`` (only ``wanted`` ones if given).

    The sampled indices depend only on the timestamps, so a second pass selects the same frames.
    """
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        raise ChoiError(f"cannot open video {path}: {err}") from err
    with container:
        if not container.streams.video:
            raise ChoiError(f"{path} has no video stream")
        stream = container.streams.video[0]
        next_time = 0.0
        try:
            for index, frame in enumerate(container.decode(stream)):
                t = float(frame.time) if frame.time is not None else index / float(stream.average_rate or 25)
                if t + 1e-6 < next_time:
                    continue
                next_time += 1.0 / sample_fps
                while next_time <= t:
                    next_time += 1.0 / sample_fps
                if wanted is None or index in wanted:
                    yield index, t, frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as err:
            # A damaged tail: keep what decoded, say where it stopped.
            log.warning("video %s: decoding stopped after frame %d (%s)", path, index, err)


# --- tracking ----------------------------------------------------------------------------------


def _tracker() -> Any:
    # CSRT (opencv-contrib, which mediapipe installs) is the most accurate; MIL is in every OpenCV.
    make = getattr(cv2, "TrackerCSRT_create", None) or cv2.TrackerMIL_create
    return make()


def _appearance(image: np.ndarray, box: PixelBox) -> np.ndarray:
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    crop = image[max(0, y1) : max(y1 + 1, y2), max(0, x1) : max(x1 + 1, x2)]
    gray = cv2.cvtColor(cv2.resize(crop, (32, 32), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    v = gray.astype(np.float32).ravel()
    v -= v.mean()
    return v / (np.linalg.norm(v) + 1e-6)


def _pixels(box: Box, shape: tuple[int, ...]) -> PixelBox:
    h, w = shape[:2]
    return box[0] * w, box[1] * h, box[2] * w, box[3] * h


def track(cfg: VideoConfig) -> list[dict[str, Any]]:
    """One record per sampled frame: pixel boxes, keypoints, confidences, and a reject reason or None."""
    q = cfg.quality
    given = load_boxes_file(cfg.boxes) if cfg.boxes else None
    records: list[dict[str, Any]] = []
    tracker, template, person_box = None, None, None
    with PersonSegmenter() as people:
        for index, t, image in sampled_frames(cfg.video, cfg.sample_fps):
            rec: dict[str, Any] = {"frame": index, "time": round(t, 4), "reject": None, "detail": ""}
            records.append(rec)
            if given is not None:
                if index not in given:
                    rec.update(reject="no_box", detail=f"frame {index} is not in --boxes")
                    continue
                person_box, object_box = (_pixels(b, image.shape) for b in given[index])
                track_conf = 1.0
            elif tracker is None:
                p, o = parse_first_boxes(cfg.first_boxes)
                person_box, object_box = _pixels(p, image.shape), _pixels(o, image.shape)
                tracker = _tracker()
                tracker.init(image[..., ::-1].copy(), tuple(int(round(v)) for v in _xywh(object_box)))
                template, track_conf = _appearance(image, object_box), 1.0
            else:
                ok, xywh = tracker.update(image[..., ::-1].copy())
                if not ok:
                    rec.update(reject="lost_track", detail="the object tracker lost the object")
                    continue
                x, y, w, h = xywh
                object_box = (x, y, x + w, y + h)
                track_conf = float(max(0.0, _appearance(image, object_box) @ template))
            rec.update(object_box=[round(float(v), 2) for v in object_box], track_confidence=round(track_conf, 4))
            person = people(image, person_box)
            if person is None:
                rec.update(reject="no_pose", detail="MediaPipe found no person in the box")
                continue
            if person.mask.any() and given is None:
                # Follow the person: next frame's box is this frame's mask box.
                ys, xs = np.nonzero(person.mask)
                person_box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
            rec.update(
                person_box=[round(float(v), 2) for v in person_box],
                keypoints=person.keypoints.round(3).tolist(),
                pose_confidence=round(person.confidence, 4),
            )
            if person.confidence < q.min_pose_confidence:
                rec.update(reject="low_pose_confidence", detail=f"{person.confidence:.2f} < {q.min_pose_confidence}")
            elif track_conf < q.min_track_confidence:
                rec.update(reject="low_tracking_confidence", detail=f"{track_conf:.2f} < {q.min_track_confidence}")
    if not records:
        raise ChoiError(f"no frame could be decoded from {cfg.video}")
    return records


def _xywh(box: PixelBox) -> tuple[float, float, float, float]:
    return box[0], box[1], box[2] - box[0], box[3] - box[1]


def mine_pairs(frames: list[dict[str, Any]], cfg: VideoConfig) -> list[tuple[int, int, float]]:
    """``(i, j, pose distance)`` positions into ``frames``: far apart in time and pose, most different first.

    Each frame is the target of at most one pair, so the targets are distinct images.
    """
    good = [n for n, f in enumerate(frames) if f["reject"] is None]
    candidates = []
    for a in good:
        for b in good:
            if frames[b]["time"] - frames[a]["time"] < cfg.min_gap or a == b:
                continue
            fa, fb = frames[a], frames[b]
            d = pose_distance(np.array(fa["keypoints"]), np.array(fb["keypoints"]), fa["person_box"], fb["person_box"])
            if np.isfinite(d) and d >= cfg.min_pose_distance:
                candidates.append((a, b, d))
    candidates.sort(key=lambda c: (-c[2], c[0], c[1]))
    pairs, targets = [], set()
    for a, b, d in candidates:
        if b not in targets and len(pairs) < cfg.max_pairs:
            pairs.append((a, b, round(d, 4)))
            targets.add(b)
    return pairs


# --- pairs → samples ---------------------------------------------------------------------------


def process_unit(
    cfg: VideoConfig, k: int, items: list[dict[str, Any]], progress: Callable[[int], Any]
) -> tuple[list[Sample], list[dict[str, Any]]]:
    """Samples of the pairs in ``items`` (frame rejects among them are passed through as rejects)."""
    samples, rejects = [], []
    wanted = {f["frame"] for it in items if "pair" in it for f in it["pair"]}
    images = {index: image for index, _, image in sampled_frames(cfg.video, cfg.sample_fps, wanted)} if wanted else {}
    observed: dict[int, Observation | Rejected] = {}
    segment_object = object_segmenter(cfg.sam_checkpoint, cfg.sam_model_type)
    labels = cfg.labels()
    stem = safe_key_part(Path(cfg.video).stem)
    with PersonSegmenter() as people:
        for item in items:
            if "reject" in item:
                rejects.append(item["reject"])
                progress(1)
                continue
            ref, target = item["pair"]
            where = {"item": f"{ref['frame']}-{target['frame']}", "file": Path(cfg.video).name}
            try:
                obs = []
                for f in (ref, target):
                    if f["frame"] not in observed:
                        observed[f["frame"]] = _observe(f, images.get(f["frame"]), people, segment_object, cfg.quality)
                    if isinstance(observed[f["frame"]], Rejected):
                        raise observed[f["frame"]]
                    obs.append(observed[f["frame"]])
                meta = {
                    "video": Path(cfg.video).name,
                    "ref_frame": ref["frame"],
                    "target_frame": target["frame"],
                    "ref_time": ref["time"],
                    "target_time": target["time"],
                    "pose_distance": item["pose_distance"],
                    "image_size": list(obs[1].image.shape[:2]),
                }
                key = f"video-{cfg.split}-{stem}-{ref['frame']:06d}-{target['frame']:06d}"
                samples.append(
                    assemble_sample(
                        key, obs[1], obs[0], cfg.resolution, source="video", pair_source="video", meta=meta, **labels
                    )
                )
            except Rejected as rej:
                rejects.append({**where, "reason": rej.reason, "detail": rej.detail})
            progress(1)
    return samples, rejects


def _observe(
    frame: dict[str, Any], image: np.ndarray | None, people, segment_object, q: QualityConfig
) -> Observation | Rejected:
    if image is None:
        return Rejected("unreadable_frame", f"frame {frame['frame']} did not decode")
    hb, ob = tuple(frame["person_box"]), tuple(frame["object_box"])
    person = people(image, hb)
    try:
        if person is None:
            raise Rejected("no_pose", f"frame {frame['frame']}: MediaPipe found no person")
        check_mask(person.mask, hb, "person", q)
        object_mask = segment_object(image, ob, exclude=person.mask)
        check_mask(object_mask, ob, "object", q)
    except Rejected as rej:
        return rej
    return Observation(image, person.mask, object_mask, hb, ob, np.asarray(frame["keypoints"], np.float32))


def _plan(root: Path, cfg: VideoConfig, args: dict[str, Any]) -> list[dict[str, Any]]:
    """Frame rejects then pairs, saved once: a resumed build must cut the same units."""
    path = root / PARTS / f"{cfg.split}-plan.json"
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("builder") == args:
            return saved["items"]
    frames = track(cfg)
    items: list[dict[str, Any]] = [
        {
            "reject": {
                "item": f"frame-{f['frame']}",
                "file": Path(cfg.video).name,
                "reason": f["reject"],
                "detail": f["detail"],
            }
        }
        for f in frames
        if f["reject"] is not None
    ]
    pairs = mine_pairs(frames, cfg)
    items += [{"pair": [frames[a], frames[b]], "pose_distance": d} for a, b, d in pairs]
    log.info(
        "%s: %d frames sampled, %d usable, %d pairs mined",
        cfg.video,
        len(frames),
        sum(f["reject"] is None for f in frames),
        len(pairs),
    )
    atomic_write_text(path, json.dumps({"builder": args, "items": items}) + "\n")
    return items


def build_video(out: str | os.PathLike, cfg: VideoConfig, workers: int = 1, shard: str | None = None) -> dict[str, Any]:
    """Build (or complete) split ``cfg.split`` of ``out`` from ``cfg.video``; returns the build summary."""
    shard_spec = parse_shard(shard)
    labels = cfg.labels()
    args = {
        "builder": "choi.data.video",
        "video_sha256": file_sha256(cfg.video),
        **{k: v for k, v in asdict(cfg).items() if k not in ("video", "boxes", "sam_checkpoint")},
        "boxes_sha256": file_sha256(cfg.boxes) if cfg.boxes else None,
        "objects": "sam" if cfg.sam_checkpoint else "grabcut",
    }
    import mediapipe

    spec = BuildSpec(
        generator=GENERATOR,
        generator_version=f"MediaPipe {mediapipe.__version__}; OpenCV {cv2.__version__}",
        split=cfg.split,
        resolution=cfg.resolution,
        num_units=0,  # set below, once the plan is known
        builder_args=args,
        card=(
            f"CHOI samples mined from video ({cfg.resolution}x{cfg.resolution}): '{labels['text']}'. Reference "
            "from one frame, target from another at least "
            f"{cfg.min_gap} s apart with a different pose (pair_source: video)."
        ),
    )
    root = prepare_folder(out, spec)
    items = _plan(root, cfg, args)
    units = [items[i : i + cfg.shard_size] for i in range(0, len(items), cfg.shard_size)] or [[]]
    spec = BuildSpec(**{**asdict(spec), "num_units": len(units)})
    return run_build(out, spec, process_unit, cfg, units=units, shard=shard_spec, workers=workers)
