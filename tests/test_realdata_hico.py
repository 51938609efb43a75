"""`choi data hico` on real photos (skimage.data) with small HICO-DET-format annotation files."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from choi.cli import main
from choi.data import hico_classes as hc
from choi.data.hico import HicoConfig, build_hico
from choi.data.realbuild import REJECTS_NAME, part_path
from choi.data.segmenters import PersonSegmenter, grabcut_mask
from choi.data.shards import iter_samples, read_manifest, shard_name

data = pytest.importorskip("skimage.data")

ASTRONAUT_PERSON = [20, 10, 370, 512]  # pixels, x1 y1 x2 y2
ASTRONAUT_HELMET = [280, 340, 500, 512]
ASTRONAUT_SHUTTLE = [350, 0, 465, 290]  # the shuttle model, annotated as an airplane
MOTORCYCLE = [60, 100, 700, 470]


def _hoi(verb: str, subject: int = 0, obj: int = 1) -> dict:
    return {"subject_id": subject, "object_id": obj, "category_id": hc.VERBS.index(verb) + 1}


def _person(box):
    return {"bbox": box, "category_id": hc.PERSON_ID}


@pytest.fixture(scope="module")
def hico_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hico")
    images = root / "images"
    images.mkdir()
    Image.fromarray(data.astronaut()).save(images / "astronaut.png")
    Image.fromarray(data.coffee()).save(images / "coffee.jpg")
    Image.fromarray(data.stereo_motorcycle()[0]).save(images / "motorcycle.png")
    (images / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    entries = [
        {
            "file_name": "astronaut.png",
            "annotations": [
                _person(ASTRONAUT_PERSON),
                {"bbox": ASTRONAUT_HELMET, "category_id": 37},  # sports_ball: choi's "ball"
                {"bbox": ASTRONAUT_SHUTTLE, "category_id": 5},
            ],
            "hoi_annotation": [_hoi("hold"), _hoi("no_interaction", obj=2), _hoi("inspect", obj=2)],
        },
        # No person in a coffee cup: MediaPipe must find no pose, and the item is rejected.
        {
            "file_name": "coffee.jpg",
            "annotations": [_person([100, 30, 500, 330]), {"bbox": [100, 30, 500, 330], "category_id": 47}],
            "hoi_annotation": [_hoi("drink_with")],
        },
        {"file_name": "missing.png", "annotations": [_person([0, 0, 50, 50])], "hoi_annotation": [_hoi("hold", obj=0)]},
        {"file_name": "corrupt.jpg", "annotations": [_person([0, 0, 50, 50])], "hoi_annotation": [_hoi("hold", obj=0)]},
        {
            "file_name": "motorcycle.png",
            "annotations": [{"bbox": MOTORCYCLE, "category_id": 4}],
            "hoi_annotation": [_hoi("ride", obj=3), {"subject_id": 0}],  # bad index, missing fields
        },
        ["not", "an", "entry"],
    ]
    (root / "ann.json").write_text(json.dumps(entries))
    return root


@pytest.fixture(scope="module")
def built(hico_dir, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("hico_out") / "ds"
    cfg = HicoConfig(
        images=str(hico_dir / "images"), annotations=str(hico_dir / "ann.json"), resolution=64, shard_size=3
    )
    return out, build_hico(out, cfg)


def _box_stats(mask: np.ndarray, box) -> tuple[float, float]:
    """(fraction of the box covered by the mask, fraction of the mask inside the box)."""
    x1, y1, x2, y2 = box
    inside = mask[y1:y2, x1:x2].sum()
    return inside / ((x2 - x1) * (y2 - y1)), inside / max(1, mask.sum())


def test_class_lists():
    assert len(hc.OBJECTS) == 80 and len({n for _, n in hc.OBJECTS}) == 80
    assert len(hc.VERBS) == 117 and len(set(hc.VERBS)) == 117
    assert hc.object_name(90) == "toothbrush" and hc.object_name(12) is None
    assert hc.verb_name(1) == "adjust" and hc.verb_name(117) == "zip" and hc.verb_name(118) is None
    assert hc.choi_class("kick", "sports_ball") == "kick_ball" and hc.choi_class("board", "airplane") is None
    counts = hc.hoi_counts([("ride", "bicycle")] * 12 + [("repair", "bicycle")] * 3)
    assert hc.rare_classes(counts) == {"repair_bicycle"}


def test_mediapipe_person_mask_and_keypoints_on_astronaut():
    image = data.astronaut()
    with PersonSegmenter() as people:
        person = people(image, ASTRONAUT_PERSON)
    assert person is not None and person.confidence > 0.8
    cover, inside = _box_stats(person.mask, ASTRONAUT_PERSON)
    assert cover > 0.45, cover  # the box includes background beside her shoulders
    assert inside > 0.95, inside
    head, neck = person.keypoints[0], person.keypoints[1]
    assert 150 < head[0] < 280 and 60 < head[1] < 200 and head[1] < neck[1]  # her face, above the neck


def test_grabcut_object_mask_stays_in_box():
    # The helmet overlaps her suit: as in the builder, the person mask starts as probable background.
    astronaut, motorcycle = data.astronaut(), data.stereo_motorcycle()[0]
    with PersonSegmenter() as people:
        person = people(astronaut, ASTRONAUT_PERSON).mask
    for image, box, exclude, min_cover in [
        (astronaut, ASTRONAUT_HELMET, person, 0.6),
        (motorcycle, MOTORCYCLE, None, 0.35),  # a thin-framed machine: wheels, fork, seat
    ]:
        mask = grabcut_mask(image, box, exclude=exclude)
        cover, inside = _box_stats(mask, box)
        assert cover > min_cover, cover
        assert inside > 0.99, inside
        assert np.array_equal(mask, grabcut_mask(image, box, exclude=exclude))  # seeded: same mask each run


def test_build_accepts_good_pairs_and_reports_bad_items(built):
    out, summary = built
    assert summary["complete"] and summary["accepted"] == 3
    assert summary["rejected_by_reason"] == {
        "malformed_annotation": 3,
        "missing_file": 1,
        "no_pose": 1,
        "unreadable_file": 1,
    }
    manifest = read_manifest(out)
    assert manifest.generator == "hico" and manifest.resolution == 64
    samples = list(iter_samples(out, split="train"))
    assert [s.interaction for s in samples] == ["hold_ball", "no_interaction", "inspect_airplane"]
    for s in samples:
        assert s.source == "hico" and s.pair_source == "same_image"
        assert s.image.shape == (64, 64, 3) and s.human_ref.shape == (64, 64, 3)
        assert s.human_mask.mean() > 0.15 and s.object_mask.any() and s.human_ref_mask.any()
        assert s.meta["file_name"] == "astronaut.png" and s.meta["hico_rare"] is True
    assert samples[2].meta["choi_class"] is None and samples[2].meta["hico_verb"] == "inspect"
    rejects = [json.loads(line) for line in (out / REJECTS_NAME).read_text().splitlines()]
    assert len(rejects) == 6 and all(r["reason"] and r["detail"] for r in rejects)
    assert {r["file"] for r in rejects if r["reason"] == "missing_file"} == {"missing.png"}


def test_preview_works_on_hico_dataset(built, tmp_path):
    out, _ = built
    assert main(["data", "preview", str(out), "--out", str(tmp_path / "sheet.png"), "--n", "3"]) == 0
    assert Image.open(tmp_path / "sheet.png").size[1] > 3 * 64


def test_resume_redoes_only_missing_units_without_duplicates(built, hico_dir, tmp_path):
    out, summary = built
    copy = tmp_path / "ds"
    shutil.copytree(out, copy)
    keys = [s.key for s in iter_samples(out, split="train")]
    # A killed build: one unit lost its shard, another its record (the shard was written, the record not).
    (copy / shard_name("train", 0)).unlink()
    part_path(copy, "train", 0).unlink()
    part_path(copy, "train", 1).unlink()
    cfg = HicoConfig(
        images=str(hico_dir / "images"), annotations=str(hico_dir / "ann.json"), resolution=64, shard_size=3
    )
    again = build_hico(copy, cfg)
    assert again == summary
    assert [s.key for s in iter_samples(copy, split="train")] == keys
    assert (copy / REJECTS_NAME).read_text() == (out / REJECTS_NAME).read_text()


def test_shards_across_machines_and_workers(built, hico_dir, tmp_path):
    out, summary = built
    cfg = HicoConfig(
        images=str(hico_dir / "images"), annotations=str(hico_dir / "ann.json"), resolution=64, shard_size=3
    )
    first = build_hico(tmp_path / "ds", cfg, shard="1/2")
    assert not first["complete"] and not read_manifest(tmp_path / "ds").splits["train"].complete
    second = build_hico(tmp_path / "ds", cfg, shard="0/2", workers=2)
    assert second == summary
    keys = [s.key for s in iter_samples(out, split="train")]
    assert [s.key for s in iter_samples(tmp_path / "ds", split="train")] == keys


def _run(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err.strip()


def test_bad_top_level_arguments_are_one_line_exit_2(hico_dir, tmp_path, capsys):
    images, ann = str(hico_dir / "images"), str(hico_dir / "ann.json")
    not_a_list = tmp_path / "bad.json"
    not_a_list.write_text('{"file_name": "x"}')
    cases = [
        (["--images", str(tmp_path / "nope"), "--annotations", ann], "--images"),
        (["--images", images, "--annotations", str(tmp_path / "none.json")], "--annotations"),
        (["--images", images, "--annotations", str(not_a_list)], "JSON list"),
        (["--images", images, "--annotations", ann, "--shard", "2/2"], "--shard"),
        (["--images", images, "--annotations", ann, "--workers", "0"], "--workers"),
    ]
    for args, expected in cases:
        code, err = _run(capsys, "data", "hico", *args, "--out", str(tmp_path / "o"))
        assert code == 2 and expected in err and len(err.splitlines()) == 1, err


@pytest.mark.skipif(importlib.util.find_spec("segment_anything") is not None, reason="segment-anything installed")
def test_sam_without_package_is_a_clear_error(hico_dir, tmp_path, capsys):
    checkpoint = tmp_path / "sam_vit_b.pth"
    checkpoint.write_bytes(b"weights")
    code, err = _run(
        capsys, "data", "hico", "--images", str(hico_dir / "images"), "--annotations", str(hico_dir / "ann.json"),
        "--out", str(tmp_path / "o"), "--sam-checkpoint", str(checkpoint),
    )  # fmt: skip
    assert code == 2 and len(err.splitlines()) == 1
    assert "segment-anything" in err and "choi[sam]" in err
