"""DINO / CLIP in `choi eval`: CLIP-T, the regions choi's segmenters find, HOI-World and real-photo datasets."""

from __future__ import annotations

import dataclasses
import json
import logging

import cv2
import numpy as np
import pytest
import torch

from choi.cli import main
from choi.data.schema import encode
from choi.data.shards import Manifest, ShardInfo, SplitInfo, file_sha256, shard_name, write_manifest, write_shard
from choi.data.synth import SynthConfig, build_synth
from choi.errors import ChoiError
from choi.evaluation import foundation as FM
from choi.evaluation.metrics import box_iou
from choi.evaluation.regions import find_regions
from choi.world.palette import REF_BACKGROUND
from fake_samples import random_sample
from tiny_encoders import write_tiny_clip, write_tiny_dino

transformers = pytest.importorskip("transformers")
skimage_data = pytest.importorskip("skimage.data")
pytestmark = pytest.mark.usefixtures("one_thread")

FOUNDATION_KEYS = {"dino_human", "dino_object", "dino_pair", "clip_i_human", "clip_i_object", "clip_i_pair", "clip_t",
                   "human_found", "object_found"}  # fmt: skip


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    root = tmp_path_factory.mktemp("encoders")
    return write_tiny_dino(root / "dino"), write_tiny_clip(root / "clip")


# --- CLIP-T ---------------------------------------------------------------------------------------


def test_clip_text_embedding_matches_clip_model(encoders):
    _, clip_dir = encoders
    clip = FM.load_clip(clip_dir)
    texts = ["a person riding a bicycle", "a person kicking a ball", "a person sitting on a bench"]
    emb = clip.embed_text(texts)
    assert emb.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(clip.embed_text(texts[1:2]), emb[1:2], atol=1e-5)  # batch independent

    model = transformers.CLIPModel.from_pretrained(clip_dir, local_files_only=True).eval()
    tokenizer = transformers.CLIPTokenizer.from_pretrained(clip_dir, local_files_only=True)
    tokens = tokenizer(texts, padding="max_length", max_length=77, return_tensors="pt")
    assert tokenizer.tokenize("riding") == ["r", "i", "d", "ing</w>"]  # the hand-written merges apply
    with torch.no_grad():
        pooled = model.text_model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).pooler_output
        ref = torch.nn.functional.normalize(model.text_projection(pooled), dim=-1).numpy()
    np.testing.assert_allclose(emb, ref, atol=1e-5)

    images = [np.full((40, 40, 3), v, np.uint8) for v in (0, 128, 255)]
    scores = FM.clip_t_scores(clip, images, texts)["clip_t"]
    assert scores.shape == (3,) and np.all(np.abs(scores) <= 100 + 1e-4)
    with pytest.raises(ValueError, match="texts"):
        FM.clip_t_scores(clip, images, texts[:2])
    with pytest.raises(ValueError, match="'clip' embedder"):
        FM.clip_t_scores(FM.load_dino(encoders[0]), images, texts)


def test_clip_folder_without_tokenizer_scores_without_clip_t(tmp_path, caplog):
    clip_dir = write_tiny_clip(tmp_path / "clip", tokenizer=False)
    assert FM.load_clip(clip_dir).text is None
    with pytest.raises(ChoiError, match="CLIP-T"):
        FM.load_clip(clip_dir).embed_text(["a person"])
    with caplog.at_level(logging.WARNING):
        metrics = FM.FoundationMetrics.load(clip=clip_dir)
    assert "CLIP-T is skipped" in caplog.text
    images = [np.zeros((32, 32, 3), np.uint8)] * 2
    regions = find_regions(images, [None, None], person=lambda im: None)
    scores = metrics(images, regions, images, images, ["a person", "a ball"])
    assert set(scores) == {"clip_i_human", "clip_i_object", "clip_i_pair", "human_found", "object_found"}
    assert FM.FoundationMetrics.load() is None


# --- regions --------------------------------------------------------------------------------------


def _corners(image: np.ndarray) -> np.ndarray:
    return image[[0, 0, -1, -1], [0, -1, 0, -1]]


def test_regions_on_a_photo_come_from_the_segmenters():
    image = skimage_data.astronaut()  # 512 x 512: a person holding a helmet
    person_box, helmet_box = (20, 10, 370, 512), (280, 340, 500, 512)  # pixels, as in test_realdata_hico
    regions = find_regions([image], [tuple(v / 512 for v in helmet_box)])
    assert regions.human_found[0] and regions.object_found[0]
    for cut in (regions.human[0], regions.object[0]):
        assert cut.shape == (512, 512, 3)
        assert (_corners(cut) == REF_BACKGROUND).all()  # cut out like the references
    found = regions.boxes[0]
    assert box_iou(found, tuple(v / 512 for v in person_box)) > 50  # the person dominates the union
    assert found[2] >= helmet_box[2] / 512 - 0.05  # and the helmet widens it to the right


def test_regions_not_found_fall_back_to_the_box_crop():
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    flat = np.full((64, 64, 3), 90, np.uint8)
    regions = find_regions([noise, flat], [(0.25, 0.5, 0.75, 1.0), None])
    assert not regions.human_found.any()  # MediaPipe sees no person in noise or a flat wall
    assert not regions.object_found[1] and regions.boxes[1] is None
    np.testing.assert_array_equal(regions.human[0], noise[32:64, 16:48])
    np.testing.assert_array_equal(regions.human[1], flat)
    with pytest.raises(ValueError, match="boxes"):
        find_regions([noise], [])


# --- choi eval --------------------------------------------------------------------------------------


def test_eval_hoi_world_adds_dino_clip_only_when_given(tmp_path, encoders):
    data = tmp_path / "hoiw"
    build_synth(data, SynthConfig(n=6, split="test", seed=0, resolution=128, shard_size=6))
    dino_dir, clip_dir = encoders
    base = ["eval", "--data", str(data), "--methods", "gt,copy-paste", "--n", "3"]
    assert main([*base, "--out", str(tmp_path / "plain")]) == 0
    plain = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    assert all("foundation" not in m for m in plain["methods"].values())
    assert "DINO" not in (tmp_path / "plain" / "report.md").read_text()

    assert main([*base, "--out", str(tmp_path / "rich"), "--dino", str(dino_dir), "--clip", str(clip_dir)]) == 0
    rich = json.loads((tmp_path / "rich" / "metrics.json").read_text())
    for name, m in rich["methods"].items():
        assert set(m["foundation"]) == FOUNDATION_KEYS, name
        assert all(-100 <= v <= 100 for v in m["foundation"].values())
        other = {k: v for k, v in m.items() if k != "foundation"}
        assert json.dumps(other, sort_keys=True) == json.dumps(plain["methods"][name], sort_keys=True)
    assert rich["validation"] == plain["validation"] and "foundation_validation" not in plain
    checks = rich["foundation_validation"]
    assert set(checks) == FOUNDATION_KEYS - {"human_found", "object_found"}
    # The gt row scores the same images, regions and references as the check's own-references column.
    assert checks["dino_human"]["gt"] == pytest.approx(rich["methods"]["gt"]["foundation"]["dino_human"])
    report = (tmp_path / "rich" / "report.md").read_text()
    assert "| DINO-human |" in report and "| CLIP-T |" in report and "interaction acc" in report


def test_eval_bad_encoder_folder_is_one_line(tmp_path, encoders):
    data = tmp_path / "hoiw"
    build_synth(data, SynthConfig(n=2, split="test", seed=0, resolution=64, shard_size=2))
    args = ["eval", "--data", str(data), "--methods", "gt", "--n", "1", "--out", str(tmp_path / "r")]
    assert main([*args, "--dino", str(encoders[1])]) == 2  # a CLIP folder is no DINOv2
    assert not (tmp_path / "r" / "outputs").exists()  # checked before any method ran


def _cut_out(rng: np.random.Generator, size: int, shape: str) -> tuple[np.ndarray, np.ndarray]:
    """A coloured shape on the references' plain background, as `choi data hico` cuts them."""
    image = np.empty((size, size, 3), np.uint8)
    image[:] = REF_BACKGROUND
    mask = np.zeros((size, size), np.uint8)
    if shape == "person":
        cv2.ellipse(mask, (size // 2, size // 2), (size // 6, size * 2 // 5), 0, 0, 360, 1, -1)
    else:
        cv2.rectangle(mask, (size // 5, size // 3), (size * 4 // 5, size * 2 // 3), 1, -1)
    image[mask > 0] = rng.integers(0, 120, 3)
    return image, mask > 0


def _photo_dataset(root, n: int = 3, resolution: int = 64):
    """What `choi data hico` writes, in miniature: source "hico", no background, cut-out references."""
    samples = []
    for i in range(n):
        rng = np.random.default_rng(i)
        human_ref, human_ref_mask = _cut_out(rng, resolution, "person")
        object_ref, object_ref_mask = _cut_out(rng, resolution, "object")
        s = random_sample(f"test-{i:04d}", [i, 7], resolution, background=False)
        refs = dict(human_ref=human_ref, human_ref_mask=human_ref_mask, object_ref=object_ref,
                    object_ref_mask=object_ref_mask)  # fmt: skip
        samples.append(
            dataclasses.replace(s, **refs, human_id=-1, object_id=-1, source="hico", pair_source="same_image")
        )
    root.mkdir(parents=True)
    write_shard(root / shard_name("test", 0), (encode(s) for s in samples))
    info = ShardInfo(shard_name("test", 0), n, file_sha256(root / shard_name("test", 0)))
    manifest = Manifest(generator="hico", generator_version="test", resolution=None)
    manifest.splits["test"] = SplitInfo(count=n, shards=[info], complete=True)
    write_manifest(root, manifest)
    return root


def test_eval_real_photos_skips_hoi_world_evaluators(tmp_path, encoders, tiny_model_dir, caplog):
    data = _photo_dataset(tmp_path / "hico")
    model = tiny_model_dir
    dino_dir, clip_dir = encoders
    out = tmp_path / "report"
    args = ["eval", "--data", str(data), "--out", str(out), "--n", "3", "--model", str(model),
            "--dino", str(dino_dir), "--clip", str(clip_dir)]  # fmt: skip
    with caplog.at_level(logging.WARNING):
        assert main(args) == 0  # --n 3 of 3 samples: no real renders are held back for FID
    notices = [r.getMessage() for r in caplog.records if "trained on HOI-World" in r.getMessage()]
    assert len(notices) == 1 and notices[0].startswith("hico data:")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["validation"] is None and metrics["skipped"] == notices[0]
    assert list(metrics["methods"]) == ["gt", "two-stage", "copy-paste"]
    for name, m in metrics["methods"].items():
        assert "missing" not in m, (name, m)
        assert set(m["foundation"]) == FOUNDATION_KEYS
        assert 0 <= m["controls"]["box_iou"] <= 100 and m["controls"]["box_iou_from"]
        assert "interaction_acc" not in m and "identity" not in m and "quality" not in m
    report = (out / "report.md").read_text()
    assert "Skipped: hico data" in report and "| DINO-pair |" in report and "interaction acc" not in report
    assert "another request's references" in report
    assert set(metrics["foundation_validation"]["clip_t"]) == {"gt", "swapped"}
    assert (out / "grid_two-stage.png").exists() and not (out / "per_class_accuracy.png").exists()

    # Box adherence alone, without encoders.
    assert main([*args[:9], "--methods", "copy-paste", "--out", str(tmp_path / "boxes")]) == 0
    only = json.loads((tmp_path / "boxes" / "metrics.json").read_text())["methods"]["copy-paste"]
    assert set(only) == {"n", "controls"}
