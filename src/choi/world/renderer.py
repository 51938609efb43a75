"""Sample assembly: identities + pose programme + scene -> a complete :class:`~choi.data.schema.Sample`.

Steps of :func:`render_scene`:
1. resolve identities, scene, facing and animation phase;
2. run the interaction's pose programme (world units, facing +x);
3. draw the person and the object into one :class:`~choi.world.canvas.Drawing`;
4. fit the pair into the image (random placement, or a requested union box), mirroring for facing left;
5. rasterise into the scene copy and a label map: image, masks, boxes, keypoints with visibility;
6. render the references: the person alone in another pose, the object alone in another view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from choi.data.schema import KEYPOINT_NAMES, Sample, mask_box
from choi.errors import ChoiError
from choi.vocabulary import BY_NAME, CLASSES, OBJECT_CATEGORIES, InteractionClass
from choi.world import figure
from choi.world.bodies import N_HUMAN_IDENTITIES, HumanIdentity
from choi.world.canvas import Drawing
from choi.world.figure import OBJECT_LABEL, draw_human
from choi.world.interactions import PROGRAMMES
from choi.world.objects import N_OBJECT_IDENTITIES, ObjectIdentity, ObjectPose, draw_object
from choi.world.palette import REF_BACKGROUND, REFERENCE_FILL
from choi.world.poses import REF_POSES, Ctx, Layout, pose_distance, reference_pose
from choi.world.scenes import SCENES, backdrop
from choi.world.skeleton import MIRROR_INDEX

WORLD_VERSION = "hoi-world-1"
SPLITS = ("train", "test")
_SPLIT_CODE = {"train": 0, "test": 1}
TEST_EVERY = 10  # ids divisible by this are test identities, the rest train
RARE_WEIGHT = 0.1  # rare classes are drawn ~10x less often in the train split
RESOLUTIONS = (64, 128, 256)
FACINGS = ("left", "right")


def split_of_human(i: int) -> str:
    """The split ("train" or "test") whose pool holds human identity ``i``."""
    return "test" if int(i) % TEST_EVERY == 0 else "train"


def split_of_object(i: int) -> str:
    """The split ("train" or "test") whose pool holds object identity ``i`` (of any category)."""
    return "test" if int(i) % TEST_EVERY == 0 else "train"


def _pool_id(rng: np.random.Generator, split: str, n: int) -> int:
    """A uniformly random id of ``split``'s pool within ``[0, n)``."""
    block = int(rng.integers(0, n // TEST_EVERY))
    if split == "test":
        return block * TEST_EVERY
    return block * TEST_EVERY + 1 + int(rng.integers(0, TEST_EVERY - 1))


def class_probabilities(split: str) -> np.ndarray:
    """Sampling probabilities over ``CLASSES``: rare classes down-weighted in train, uniform in test."""
    if split not in _SPLIT_CODE:
        raise ChoiError(f"unknown split '{split}'; allowed: {', '.join(SPLITS)}")
    w = np.array([RARE_WEIGHT if (c.rare and split == "train") else 1.0 for c in CLASSES])
    return w / w.sum()


# --- placement -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """World units -> pixels: ``px = matrix @ [x, y, 1]`` (mirrored when facing left)."""

    matrix: np.ndarray
    px_per_unit: float


def _fit(bounds, facing: str, resolution: int, box_px) -> Placement:
    """Map world ``bounds`` onto the pixel box ``box_px`` = (x0, y0, x1, y1), keeping proportions."""
    x0, y0, x1, y1 = bounds
    bx0, by0, bx1, by1 = box_px
    s = min((bx1 - bx0) / max(x1 - x0, 1e-9), (by1 - by0) / max(y1 - y0, 1e-9))
    cx, cy = (bx0 + bx1) / 2, (by0 + by1) / 2
    wx, wy = (x0 + x1) / 2, (y0 + y1) / 2
    sx = -s if facing == "left" else s
    return Placement(np.array([[sx, 0.0, cx - sx * wx], [0.0, s, cy - s * wy]]), s)


def _random_box(rng: np.random.Generator, bounds, human_height: float, resolution: int, horizon: float):
    """A random pixel box for the pair: a person 45-80% of the image tall, feet below the horizon."""
    x0, y0, x1, y1 = bounds
    w, h = x1 - x0, y1 - y0
    margin = 0.03 * resolution
    s = rng.uniform(0.45, 0.8) * resolution / human_height
    s = min(s, (resolution - 2 * margin) / w, (resolution - 2 * margin) / h)
    pw, ph = w * s, h * s
    left = rng.uniform(margin, max(margin, resolution - margin - pw))
    # The ground (world y = 0) lands between the horizon and the bottom edge when the pair allows it.
    ground_lo = max(horizon * resolution + 0.05 * resolution, margin + (0 - y0) * s)
    ground_hi = resolution - margin - (y1 - 0) * s
    ground = rng.uniform(ground_lo, ground_hi) if ground_hi > ground_lo else ground_hi
    top = ground - (0 - y0) * s
    return (left, top, left + pw, top + ph)


# --- rendering -----------------------------------------------------------------------------------


def _rasterise(drawing: Drawing, canvas: np.ndarray, placement: Placement) -> np.ndarray:
    labels = np.zeros(canvas.shape[:2], np.uint8)
    drawing.render(canvas, labels, placement.matrix, placement.px_per_unit)
    return labels


def _allowed_labels() -> np.ndarray:
    """(14, 256) bool: which body-part labels count as "this joint is visible" (canonical order)."""
    b = figure
    parts = {
        0: (b.P_HEAD, b.P_HAIR), 1: (b.P_NECK, b.P_TORSO, b.P_HEAD, b.P_HAIR),
        2: (b.P_FAR_UPPER,), 3: (b.P_FAR_UPPER, b.P_FAR_FORE), 4: (b.P_FAR_FORE, b.P_FAR_HAND),
        5: (b.P_NEAR_UPPER,), 6: (b.P_NEAR_UPPER, b.P_NEAR_FORE), 7: (b.P_NEAR_FORE, b.P_NEAR_HAND),
        8: (b.P_FAR_THIGH, b.P_PELVIS, b.P_TORSO), 9: (b.P_FAR_THIGH, b.P_FAR_SHIN), 10: (b.P_FAR_SHIN, b.P_FAR_SHOE),
        11: (b.P_NEAR_THIGH, b.P_PELVIS, b.P_TORSO), 12: (b.P_NEAR_THIGH, b.P_NEAR_SHIN),
        13: (b.P_NEAR_SHIN, b.P_NEAR_SHOE),
    }  # fmt: skip
    table = np.zeros((len(KEYPOINT_NAMES), 256), bool)
    for j, labs in parts.items():
        table[j, list(labs)] = True
    table.setflags(write=False)
    return table


_ALLOWED = _allowed_labels()
_NEIGHBOURS = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)])


def _keypoints(joints: np.ndarray, placement: Placement, labels: np.ndarray, facing: str) -> np.ndarray:
    """(14, 3) normalised keypoints; visibility 1 when the joint's own parts show at its pixel."""
    h, w = labels.shape
    px = joints @ placement.matrix[:, :2].T + placement.matrix[:, 2]
    xi = np.floor(px[:, 0]).astype(int)
    yi = np.floor(px[:, 1]).astype(int)
    inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    ys = np.clip(yi[:, None] + _NEIGHBOURS[:, 0], 0, h - 1)
    xs = np.clip(xi[:, None] + _NEIGHBOURS[:, 1], 0, w - 1)
    seen = _ALLOWED[np.arange(len(joints))[:, None], labels[ys, xs]].any(axis=1) & inside
    kp = np.concatenate([px / [w, h], seen[:, None]], axis=1).astype(np.float32)
    return kp[MIRROR_INDEX] if facing == "left" else kp


def _human_reference(rng, human: HumanIdentity, target_pose, resolution: int):
    """The person alone, centred on a plain background, in a pose unlike the target's."""
    kinds = list(REF_POSES)
    start = int(rng.integers(len(kinds)))
    for k in range(len(kinds)):  # the first presentation pose that differs enough from the target
        pose = reference_pose(rng, human.dims, kinds[(start + k) % len(kinds)])
        if pose_distance(pose.joints, target_pose.joints) > 0.12:
            break
    facing = FACINGS[int(rng.integers(2))]
    drawing = draw_human(human, pose)
    canvas, labels, placement = _alone(drawing, facing, resolution, REFERENCE_FILL["human"])
    keypoints = _keypoints(pose.joints, placement, labels, facing).round(4).tolist()
    return canvas, labels > 0, {"name": pose.name, "facing": facing, "keypoints": keypoints}


def _object_reference(rng, obj: ObjectIdentity, target: ObjectPose, target_facing: str, resolution: int):
    """The object alone, centred, turned and mirrored relative to the target view."""
    angle = float(rng.uniform(0.25, 0.6)) * (1 if rng.random() < 0.5 else -1)
    state = dict(target.state)
    if obj.category == "umbrella":
        state["open"] = not state.get("open", True) if rng.random() < 0.3 else True
    elif obj.category == "suitcase":
        state["handle"] = not state.get("handle", False)
    elif obj.category == "skateboard":
        state["view"] = "bottom" if state.get("view", "side") == "side" else "side"
    elif obj.category == "bicycle":
        state["crank"] = float(rng.uniform(0, math.tau))
    if obj.category in ("bicycle", "chair", "suitcase", "skateboard") and state.get("view") != "bottom":
        angle *= 0.3  # upright things stay near upright; the mirror changes the view
    facing = "right" if target_facing == "left" else "left"
    drawing, _ = draw_object(obj, ObjectPose(0.0, 0.0, angle, 1.0, False, state), 0.0)
    canvas, labels, _ = _alone(drawing, facing, resolution, REFERENCE_FILL["object"])
    return canvas, labels > 0, {"angle": round(angle, 4), "facing": facing, "state": _jsonable(state)}


def _alone(drawing: Drawing, facing: str, resolution: int, fill: float, background=REF_BACKGROUND):
    """``drawing`` centred on a plain square canvas, proportions kept, inside the middle ``fill`` of it:
    (canvas, labels, placement)."""
    m = resolution * (1 - fill) / 2
    placement = _fit(drawing.bounds(), facing, resolution, (m, m, resolution - m, resolution - m))
    canvas = np.empty((resolution, resolution, 3), np.uint8)
    canvas[:] = background
    return canvas, _rasterise(drawing, canvas, placement), placement


def object_view(category: str, i: int, state: dict, resolution: int = 96) -> np.ndarray:
    """Object identity ``i`` drawn alone in ``state``, unturned, at unit size, filling a black
    (resolution, resolution, 3) canvas: all a picture of it in that state can show, size aside.

    Two identities with equal views cannot be told apart by a scene that shows them in ``state``:
    a skateboard seen from the side hides the graphic under its deck.
    """
    ident = replace(ObjectIdentity.from_id(category, i), size=1.0)
    drawing, _ = draw_object(ident, ObjectPose(0.0, 0.0, 0.0, 1.0, False, dict(state)), 0.0)
    return _alone(drawing, "left", resolution, 0.9, background=(0, 0, 0))[0]


def _mask_box(mask: np.ndarray):
    """Same result as :func:`choi.data.schema.mask_box`, from row/column projections (4x faster)."""
    rows, cols = mask.any(axis=1), mask.any(axis=0)
    if not rows.any():
        return mask_box(mask)
    h, w = mask.shape
    y0, y1 = int(rows.argmax()), h - int(rows[::-1].argmax())
    x0, x1 = int(cols.argmax()), w - int(cols[::-1].argmax())
    return (x0 / w, y0 / h, x1 / w, y1 / h)


def _jsonable(state: dict) -> dict:
    return {k: (round(float(v), 4) if isinstance(v, float) else v) for k, v in state.items()}


def _resolve(interaction) -> InteractionClass:
    if isinstance(interaction, InteractionClass):
        return interaction
    if interaction not in BY_NAME:
        raise ChoiError(f"unknown interaction '{interaction}'; allowed: {', '.join(BY_NAME)}")
    return BY_NAME[interaction]


def render_scene(
    human_id: int,
    object_category: str,
    object_id: int,
    interaction: str | InteractionClass,
    *,
    rng: np.random.Generator,
    resolution: int = 128,
    scene: str | None = None,
    facing: str | None = None,
    box: tuple[float, float, float, float] | None = None,
    phase: float | None = None,
    camera: np.ndarray | list | None = None,
    key: str = "scene",
) -> Sample:
    """Render one human–object pair doing ``interaction`` as a full :class:`Sample`.

    ``box`` (normalised x1, y1, x2, y2) makes the pair's union box fit inside it (centred, aspect
    kept); ``phase`` in [0, 1) animates the pose (pedalling, walking, strumming): re-create ``rng``
    with the same seed and vary ``phase`` to get frames of one pair (see :func:`render_sequence`);
    ``camera`` (a sample's ``meta["camera"]``, the 2x3 world-to-pixel affine) keeps the view fixed.

    Example:
        >>> s = render_scene(3, "ball", 7, "kick_ball", rng=np.random.default_rng(0))
        >>> s.image.shape
        (128, 128, 3)
    """
    # 1. Resolve and validate.
    cls = _resolve(interaction)
    if cls.object is not None and object_category != cls.object:
        raise ChoiError(f"interaction '{cls.name}' needs a {cls.object}, got '{object_category}'")
    if object_category not in OBJECT_CATEGORIES:
        raise ChoiError(f"unknown object category '{object_category}'; allowed: {', '.join(OBJECT_CATEGORIES)}")
    if resolution not in RESOLUTIONS:
        raise ChoiError(f"resolution {resolution} not supported; allowed: {RESOLUTIONS}")
    if facing is not None and facing not in FACINGS:
        raise ChoiError(f"facing must be 'left' or 'right', got '{facing}'")
    human = HumanIdentity.from_id(human_id)
    obj = ObjectIdentity.from_id(object_category, object_id)
    scene = scene if scene is not None else SCENES[int(rng.integers(len(SCENES)))]
    facing = facing if facing is not None else FACINGS[int(rng.integers(2))]
    phase = float(rng.uniform()) if phase is None else float(phase) % 1.0
    # 2. Pose programme.
    layout: Layout = PROGRAMMES[cls.name](Ctx(rng, human.dims, obj, phase))
    # 3. One drawing for the pair, so depth sorting interleaves body and object parts.
    drawing = draw_human(human, layout.pose, layout.depths)
    placed_obj, _ = draw_object(obj, layout.obj, layout.obj_depth)
    drawing.extend(placed_obj)
    if layout.extra is not None:
        drawing.extend(layout.extra)
    # 4. Placement.
    back = backdrop(rng, scene, resolution)
    bounds = drawing.bounds()
    if box is not None:
        box_px = tuple(float(v) * resolution for v in box)
        if not (box_px[2] > box_px[0] and box_px[3] > box_px[1]):
            raise ChoiError(f"box must be (x1, y1, x2, y2) with x2 > x1 and y2 > y1, got {box}")
    else:
        box_px = _random_box(rng, bounds, human.dims.height, resolution, back.horizon)
    placement = _fit(bounds, facing, resolution, box_px)
    if camera is not None:  # a fixed view shared by video frames; the rng draws above still happen
        matrix = np.asarray(camera, dtype=np.float64).reshape(2, 3)
        placement = Placement(matrix, float(np.sqrt(abs(np.linalg.det(matrix[:, :2])))))
    # 5. Rasterise the target.
    image = back.image.copy()
    labels = _rasterise(drawing, image, placement)
    human_mask = (labels > 0) & (labels < OBJECT_LABEL)
    object_mask = labels >= OBJECT_LABEL
    keypoints = _keypoints(layout.pose.joints, placement, labels, facing)
    # 6. References.
    human_ref, human_ref_mask, ref_pose = _human_reference(rng, human, layout.pose, resolution)
    object_ref, object_ref_mask, ref_view = _object_reference(rng, obj, layout.obj, facing, resolution)
    meta = {
        "scene": scene,
        "facing": facing,
        "world_version": WORLD_VERSION,
        "phase": round(phase, 6),
        "camera": placement.matrix.round(6).tolist(),
        "target_pose": {"programme": cls.name, "name": layout.pose.name, "phase": round(phase, 6)},
        "ref_pose": ref_pose,
        "object_pose": {"angle": round(float(layout.obj.angle), 4), "state": _jsonable(layout.obj.state)},
        "object_ref_view": ref_view,
        "human_factors": human.factors(),
        "object_factors": obj.factors(),
    }
    return Sample(
        key=key,
        image=image,
        human_mask=human_mask,
        object_mask=object_mask,
        human_box=_mask_box(human_mask),
        object_box=_mask_box(object_mask),
        keypoints=keypoints,
        interaction=cls.name,
        text=cls.phrase(object_category),
        object_category=object_category,
        human_ref=human_ref,
        object_ref=object_ref,
        human_ref_mask=human_ref_mask,
        object_ref_mask=object_ref_mask,
        background=back.image,
        human_id=int(human_id),
        object_id=int(object_id),
        source="hoi-world",
        pair_source="render",
        meta=meta,
    )


def render_sample(split: str, index: int, seed: int, resolution: int = 128) -> Sample:
    """The HOI-World sample ``index`` of ``split``; fully determined by the four arguments.

    Example:
        >>> render_sample("train", 17, seed=0).key
        'train-00000017'
    """
    if split not in _SPLIT_CODE:
        raise ChoiError(f"unknown split '{split}'; allowed: {', '.join(SPLITS)}")
    if int(index) < 0 or int(seed) < 0:
        raise ChoiError(f"index and seed must be non-negative, got index={index}, seed={seed}")
    rng = np.random.default_rng([int(seed), _SPLIT_CODE[split], int(index)])
    cls = CLASSES[int(rng.choice(len(CLASSES), p=class_probabilities(split)))]
    category = cls.object or OBJECT_CATEGORIES[int(rng.integers(len(OBJECT_CATEGORIES)))]
    human_id = _pool_id(rng, split, N_HUMAN_IDENTITIES)
    object_id = _pool_id(rng, split, N_OBJECT_IDENTITIES[category])
    return render_scene(
        human_id, category, object_id, cls, rng=rng, resolution=resolution, key=f"{split}-{int(index):08d}"
    )


def render_sequence(
    human_id: int,
    object_category: str,
    object_id: int,
    interaction: str,
    *,
    seed: int,
    phases,
    resolution: int = 128,
    scene: str | None = None,
    facing: str | None = None,
    box: tuple[float, float, float, float] | None = None,
) -> list[Sample]:
    """Frames of one pair changing pose: the same randomness for every frame, only ``phase`` varies.

    The first frame's camera is reused for the others, so the scene and the pair's place stay put
    while the body moves (pedalling, walking, strumming...).
    """

    def frame(k: int, phase: float, camera) -> Sample:
        return render_scene(human_id, object_category, object_id, interaction, rng=np.random.default_rng(seed),
                            resolution=resolution, scene=scene, facing=facing, box=box, phase=phase, camera=camera,
                            key=f"frame-{k:04d}")  # fmt: skip

    phases = list(phases)
    if not phases:
        return []
    first = frame(0, phases[0], None)
    return [first] + [frame(k, p, first.meta["camera"]) for k, p in enumerate(phases[1:], start=1)]
