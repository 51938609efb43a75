"""HOI-World renderer: determinism, splits, every interaction, masks, references, placement."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from choi.data.schema import KEYPOINT_NAMES, Sample, mask_box
from choi.errors import ChoiError
from choi.vocabulary import CLASS_NAMES, CLASSES, OBJECT_CATEGORIES, RARE_NAMES
from choi.world import (
    N_HUMAN_IDENTITIES,
    N_OBJECT_IDENTITIES,
    SCENES,
    WORLD_VERSION,
    HumanIdentity,
    ObjectIdentity,
    class_probabilities,
    render_sample,
    render_scene,
    render_sequence,
    split_of_human,
    split_of_object,
)
from choi.world.poses import pose_distance

_ROOT = Path(__file__).resolve().parents[1]
_PIXEL_FIELDS = (
    "image",
    "human_mask",
    "object_mask",
    "human_ref",
    "object_ref",
    "human_ref_mask",
    "object_ref_mask",
    "background",
    "keypoints",
)


@pytest.fixture(scope="module")
def train_samples() -> list[Sample]:
    return [render_sample("train", i, seed=3) for i in range(60)]


def _pairs_equal(a: Sample, b: Sample) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in _PIXEL_FIELDS) and a.meta == b.meta


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def test_sample_is_complete(train_samples):
    s = train_samples[0]
    r = 128
    assert s.key == "train-00000000"
    assert s.image.shape == (r, r, 3) and s.image.dtype == np.uint8
    for name in ("human_mask", "object_mask", "human_ref_mask", "object_ref_mask"):
        assert getattr(s, name).shape == (r, r) and getattr(s, name).dtype == bool
    for name in ("human_ref", "object_ref", "background"):
        assert getattr(s, name).shape == (r, r, 3) and getattr(s, name).dtype == np.uint8
    assert s.keypoints.shape == (len(KEYPOINT_NAMES), 3) and s.keypoints.dtype == np.float32
    assert set(np.unique(s.keypoints[:, 2])) <= {0.0, 1.0}
    assert s.interaction in CLASS_NAMES and s.object_category in OBJECT_CATEGORIES
    assert s.text == next(c for c in CLASSES if c.name == s.interaction).phrase(s.object_category)
    assert (s.source, s.pair_source) == ("hoi-world", "render")
    assert {"scene", "facing", "world_version", "target_pose", "ref_pose"} <= set(s.meta)
    assert s.meta["world_version"] == WORLD_VERSION and s.meta["scene"] in SCENES
    json.dumps(s.meta)  # JSON-serialisable
    assert all(0.0 <= v <= 1.0 for v in (*s.human_box, *s.object_box))
    assert s.human_box == mask_box(s.human_mask) and s.object_box == mask_box(s.object_mask)


def test_boxes_are_the_mask_boxes(train_samples):
    for s in train_samples:
        assert s.human_box == mask_box(s.human_mask) and s.object_box == mask_box(s.object_mask)


def test_deterministic_and_index_dependent():
    a, b = render_sample("test", 5, seed=11), render_sample("test", 5, seed=11)
    assert _pairs_equal(a, b)
    assert a.human_box == b.human_box and a.text == b.text
    c = render_sample("test", 6, seed=11)
    assert not np.array_equal(a.image, c.image)
    d = render_sample("test", 5, seed=12)
    assert not np.array_equal(a.image, d.image)


def _digest(sample: Sample) -> str:
    h = hashlib.sha256()
    for name in _PIXEL_FIELDS:
        h.update(np.ascontiguousarray(getattr(sample, name)).tobytes())
    h.update(json.dumps(sample.meta, sort_keys=True).encode())
    return h.hexdigest()


def test_deterministic_across_processes():
    code = (
        "from choi.world import render_sample; import tests.test_world as t; "
        "print(t._digest(render_sample('train', 42, seed=7)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=_ROOT)
    assert out.stdout.strip() == _digest(render_sample("train", 42, seed=7))


def test_train_and_test_identity_pools_are_disjoint(train_samples):
    test = [render_sample("test", i, seed=3) for i in range(40)]
    assert all(split_of_human(s.human_id) == "train" for s in train_samples)
    assert all(split_of_object(s.object_id) == "train" for s in train_samples)
    assert all(split_of_human(s.human_id) == "test" for s in test)
    assert all(split_of_object(s.object_id) == "test" for s in test)
    assert not {s.human_id for s in train_samples} & {s.human_id for s in test}
    assert not {(s.object_category, s.object_id) for s in train_samples} & {
        (s.object_category, s.object_id) for s in test
    }


def test_identity_counts_and_determinism():
    assert N_HUMAN_IDENTITIES >= 10**5
    assert all(N_OBJECT_IDENTITIES[c] >= 10**3 for c in OBJECT_CATEGORIES)
    assert HumanIdentity.from_id(123) == HumanIdentity.from_id(123)
    assert HumanIdentity.from_id(123) != HumanIdentity.from_id(124)
    assert ObjectIdentity.from_id("kite", 9) == ObjectIdentity.from_id("kite", 9)
    # The first few thousand ids are all distinct appearances (the id -> factors map is a bijection).
    looks = {tuple(v for k, v in vars(HumanIdentity.from_id(i)).items() if k != "id") for i in range(3000)}
    assert len(looks) == 3000
    with pytest.raises(ChoiError):
        HumanIdentity.from_id(N_HUMAN_IDENTITIES)
    with pytest.raises(ChoiError):
        ObjectIdentity.from_id("spoon", 1)


def test_object_factor_labels_name_every_visible_difference():
    from choi.world.objects import OBJECT_FACTOR_CLASSES, look_id, object_factor_labels
    from choi.world.palette import PAINT

    sizes = list(OBJECT_FACTOR_CLASSES.values())
    for c, category in enumerate(OBJECT_CATEGORIES):
        seen = {}
        for i in range(N_OBJECT_IDENTITIES[category]):
            labels = object_factor_labels(category, i)
            assert all(-1 <= v < k for v, k in zip(labels, sizes, strict=True))
            ident = ObjectIdentity.from_id(category, i)
            assert labels[0] == c and labels[3] >= 0 and labels[4] >= 0
            assert labels[1] in (-1, PAINT.index(ident.main)) and labels[2] in (-1, PAINT.index(ident.second))
            seen.setdefault(labels, set()).add(look_id(category, i))
        # one label tuple per look, one look per label tuple
        assert all(len(v) == 1 for v in seen.values())
        assert len(seen) == len({look_id(category, i) for i in range(N_OBJECT_IDENTITIES[category])})
    # per-category factors never share a class across categories
    assert object_factor_labels("ball", 0)[3:5] != object_factor_labels("cup", 0)[3:5]
    with pytest.raises(ChoiError):
        object_factor_labels("spoon", 0)


def test_objects_that_differ_only_in_what_is_never_drawn_share_a_look():
    from dataclasses import replace

    from choi.world.objects import ObjectPose, draw_object, look_id, object_look

    ball = ObjectIdentity.from_id("ball", 123)
    twins = [i for i in range(N_OBJECT_IDENTITIES["ball"]) if look_id("ball", i) == look_id("ball", 123)]
    others = [ObjectIdentity.from_id("ball", i) for i in twins]
    # a ball's accent colour is never drawn and a reference hides size: 4 accents x 3 sizes
    assert len(twins) == 12
    assert {(o.main, o.second, o.pattern) for o in others} == {(ball.main, ball.second, ball.pattern)}
    assert {o.accent for o in others} == {0, 1, 2, 3} and len({o.size for o in others}) == 3
    # drawn at one size, two of them are the same drawing: same shapes, same colours
    a, b = (draw_object(o, ObjectPose(), 0.0)[0] for o in (others[0], replace(others[1], size=others[0].size)))
    assert a.color == b.color and all(np.array_equal(p, q) for p, q in zip(a.pts, b.pts, strict=True))
    # a bicycle's accent colours its tyres: every accent is a look of its own
    bike = ObjectIdentity.from_id("bicycle", 5)
    same = [i for i in range(N_OBJECT_IDENTITIES["bicycle"]) if object_look("bicycle", i) == object_look("bicycle", 5)]
    assert len(same) == 3 and {ObjectIdentity.from_id("bicycle", i).accent for i in same} == {bike.accent}


@pytest.mark.parametrize("name", CLASS_NAMES)
def test_every_interaction_renders_with_consistent_masks(name):
    cls = next(c for c in CLASSES if c.name == name)
    category = cls.object or "ball"
    s = render_scene(31, category, 17, name, rng=np.random.default_rng(cls.index), resolution=128)
    assert s.interaction == name
    assert s.human_mask.sum() > 150 and s.object_mask.sum() > 15
    assert not (s.human_mask & s.object_mask).any()
    # Mask pixels show the object/person, not the scene behind them.
    diff = np.abs(s.image.astype(int) - s.background.astype(int)).sum(axis=2)
    assert diff[s.object_mask].mean() > 25 and diff[s.human_mask].mean() > 25
    # Away from the pair (beyond the anti-aliased fringe) the image is exactly the background.
    near = cv2.dilate((s.human_mask | s.object_mask).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert diff[~near].max() == 0
    # References: plain background outside the silhouette, something drawn inside.
    for ref, mask in ((s.human_ref, s.human_ref_mask), (s.object_ref, s.object_ref_mask)):
        assert mask.sum() > 100
        far = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) == 0
        assert (ref[far] == ref[0, 0]).all()
        assert np.abs(ref[mask].astype(int) - ref[0, 0]).sum(axis=1).mean() > 25


def test_reference_pose_differs_from_target(train_samples):
    for s in train_samples[:30]:
        assert s.meta["ref_pose"]["name"] != ""
        ref_keypoints = np.array(s.meta["ref_pose"]["keypoints"])
        assert pose_distance(ref_keypoints, s.keypoints) > 0.1
        # The reference silhouette, centred and scaled, differs from the target's.
        assert _silhouette_iou(s.human_mask, s.human_ref_mask) < 0.9


def _silhouette_iou(a: np.ndarray, b: np.ndarray) -> float:
    def crop(m):
        ys, xs = np.nonzero(m)
        box = m[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.uint8)
        return cv2.resize(box, (48, 48), interpolation=cv2.INTER_NEAREST).astype(bool)

    ca, cb = crop(a), crop(b)
    return (ca & cb).sum() / max((ca | cb).sum(), 1)


def test_reference_keypoint_pose_differs():
    from choi.world.poses import REF_POSES, reference_pose
    from choi.world.skeleton import BodyDims, standing

    rng = np.random.default_rng(0)
    relaxed = standing(BodyDims()).joints
    for kind in REF_POSES:
        assert pose_distance(reference_pose(rng, BodyDims(), kind).joints, relaxed) > 0.1


def test_rare_classes_are_scarcer_in_train(train_samples):
    probs = dict(zip(CLASS_NAMES, class_probabilities("train"), strict=True))
    assert max(probs[n] for n in RARE_NAMES) * 5 < min(probs[n] for n in CLASS_NAMES if n not in RARE_NAMES)
    assert np.allclose(class_probabilities("test"), 1 / len(CLASSES))
    counts = Counter(render_sample("train", i, seed=1, resolution=64).interaction for i in range(150))
    rare = sum(counts[n] for n in RARE_NAMES) / len(RARE_NAMES)
    common = sum(counts[n] for n in CLASS_NAMES if n not in RARE_NAMES) / (len(CLASS_NAMES) - len(RARE_NAMES))
    assert rare < common / 3


@pytest.mark.parametrize("resolution", [64, 256])
def test_other_resolutions(resolution):
    s = render_sample("train", 3, seed=0, resolution=resolution)
    assert s.image.shape == (resolution, resolution, 3)
    assert s.human_mask.shape == (resolution, resolution) and s.human_mask.any() and s.object_mask.any()


def test_facing_left_and_right_both_occur(train_samples):
    assert {s.meta["facing"] for s in train_samples} == {"left", "right"}
    right = render_scene(5, "bicycle", 5, "ride_bicycle", rng=np.random.default_rng(0), facing="right")
    left = render_scene(5, "bicycle", 5, "ride_bicycle", rng=np.random.default_rng(0), facing="left")
    # Facing left mirrors the layout: the near (left) hand of a right-facing person becomes the right.
    assert np.allclose(left.human_mask[:, ::-1].sum(), right.human_mask.sum(), rtol=0.05)


@pytest.mark.parametrize("name", ["ride_bicycle", "hold_cup", "fly_kite", "sit_on_chair", "no_interaction"])
def test_box_placement(name):
    cls = next(c for c in CLASSES if c.name == name)
    natural = render_scene(7, cls.object or "chair", 3, name, rng=np.random.default_rng(1)).union_box
    w, h = natural[2] - natural[0], natural[3] - natural[1]
    # Requested boxes with the pair's own proportions, moved and rescaled, and a squarer one.
    for k, (x0, y0, scale, stretch) in enumerate(((0.05, 0.1, 0.8, 1.0), (0.3, 0.2, 0.6, 1.0), (0.1, 0.05, 0.9, 1.2))):
        s = min(scale, 0.95 / w / stretch, 0.95 / h)
        box = (x0, y0, min(1.0, x0 + w * s * stretch), min(1.0, y0 + h * s))
        union = render_scene(7, cls.object or "chair", 3, name, rng=np.random.default_rng(k), box=box).union_box
        assert union[0] >= box[0] - 0.02 and union[2] <= box[2] + 0.02
        assert union[1] >= box[1] - 0.02 and union[3] <= box[3] + 0.02
        assert _iou(union, box) > 0.6, (name, union, box)


@pytest.mark.parametrize("name", CLASS_NAMES)
def test_every_pose_moves_with_the_phase(name):
    cls = next(c for c in CLASSES if c.name == name)
    a, b = render_sequence(3, cls.object or "cup", 5, name, seed=cls.index, phases=[0.0, 0.3], resolution=64)
    assert np.abs(a.keypoints[:, :2] - b.keypoints[:, :2]).max() > 0.01


def test_sequence_changes_pose_but_keeps_identity():
    frames = render_sequence(8, "bicycle", 4, "ride_bicycle", seed=2, phases=[0.0, 0.25, 0.5])
    assert len({f.human_id for f in frames}) == 1 and len({f.meta["scene"] for f in frames}) == 1
    assert all(f.meta["camera"] == frames[0].meta["camera"] for f in frames)
    assert np.array_equal(frames[0].background, frames[1].background)
    assert np.abs(frames[0].keypoints[:, :2] - frames[1].keypoints[:, :2]).max() > 0.01
    # The bicycle stays where it is while the rider pedals.
    assert np.abs(np.array(frames[0].object_box) - np.array(frames[2].object_box)).max() < 0.03


def test_bad_arguments_raise():
    with pytest.raises(ChoiError):
        render_sample("val", 0, 0)
    with pytest.raises(ChoiError):
        render_sample("train", 0, 0, resolution=100)
    with pytest.raises(ChoiError):
        render_scene(1, "ball", 1, "ride_bicycle", rng=np.random.default_rng(0))
    with pytest.raises(ChoiError):
        render_scene(1, "ball", 1, "no_interaction", rng=np.random.default_rng(0), box=(0.5, 0.5, 0.2, 0.9))
