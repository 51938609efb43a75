"""DINO / CLIP metrics with tiny randomly initialised encoders saved to disk, loaded like real weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from choi.errors import ChoiError
from choi.evaluation import foundation as FM
from choi.evaluation.regions import Regions

transformers = pytest.importorskip("transformers")

_TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


@pytest.fixture(scope="module")
def dino_dir(tmp_path_factory):
    """A tiny DINOv2 folder with its own 56-pixel image processor (as hub checkpoints ship one)."""
    path = tmp_path_factory.mktemp("dino")
    torch.manual_seed(0)
    config = transformers.Dinov2Config(**_TINY, image_size=56, patch_size=14)
    transformers.Dinov2Model(config).save_pretrained(path)
    transformers.BitImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 56, "width": 56}).save_pretrained(
        path
    )
    return path


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A tiny full CLIPModel folder (text tower included, as openai/clip-* checkpoints are), no processor."""
    path = tmp_path_factory.mktemp("clip")
    torch.manual_seed(0)
    config = transformers.CLIPConfig(
        text_config=dict(**_TINY, vocab_size=64, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(**_TINY, image_size=56, patch_size=14),
        projection_dim=16,
    )
    transformers.CLIPModel(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def dino(dino_dir):
    return FM.load_dino(dino_dir)


@pytest.fixture(scope="module")
def clip(clip_dir):
    return FM.load_clip(clip_dir)


def _images(n: int, seed: int, size: tuple[int, int] = (48, 64)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(*size, 3), dtype=np.uint8) for _ in range(n)]


def test_embeddings_are_unit_norm_with_model_dims(dino, clip):
    imgs = _images(3, 0) + _images(1, 1, size=(30, 90))  # mixed sizes in one batch
    d, c = dino(imgs), clip(imgs)
    assert d.shape == (4, 32) and c.shape == (4, 16)  # DINO hidden size; CLIP projection_dim
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, atol=1e-5)


def test_clip_embedding_matches_clip_model(clip_dir, clip):
    model = transformers.CLIPModel.from_pretrained(clip_dir, local_files_only=True).eval()
    img = _images(1, 2)
    pixels = clip.processor(images=img, return_tensors="pt")["pixel_values"]
    assert pixels.shape[-2:] == (56, 56)  # default preprocessing follows the model's image_size
    with torch.no_grad():
        ref = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
    ref = torch.nn.functional.normalize(ref, dim=-1).numpy()
    np.testing.assert_allclose(clip(img), ref, atol=1e-5)


def test_embedder_is_deterministic_and_batch_independent(dino):
    imgs = _images(5, 3)
    first = dino(imgs)
    np.testing.assert_array_equal(first, dino(imgs))
    one_by_one = np.concatenate([dino([im]) for im in imgs])
    np.testing.assert_allclose(first, one_by_one, atol=1e-5)


def test_clip_vision_with_projection_folder(tmp_path):
    config = transformers.CLIPVisionConfig(**_TINY, image_size=56, patch_size=14, projection_dim=8)
    transformers.CLIPVisionModelWithProjection(config).save_pretrained(tmp_path)
    assert FM.load_clip(tmp_path)(_images(2, 4)).shape == (2, 8)


def test_dino_default_processor_without_config(tmp_path):
    config = transformers.Dinov2Config(**_TINY, image_size=56, patch_size=14)
    transformers.Dinov2Model(config).save_pretrained(tmp_path)
    emb = FM.load_dino(tmp_path)
    pixels = emb.processor(images=_images(1, 5), return_tensors="pt")["pixel_values"]
    assert pixels.shape[-2:] == (224, 224)  # DINOv2's eval crop; position embeddings interpolate
    assert emb(_images(1, 5)).shape == (1, 32)


def test_scores_ranges_and_identical_images(dino, clip):
    gen = _images(3, 6)
    humans, objects = _images(3, 7), _images(3, 8)
    d = FM.dino_scores(dino, gen, humans, objects)
    assert set(d) == {"dino_human", "dino_object", "dino_pair"}
    for v in d.values():
        assert v.shape == (3,) and np.all(np.abs(v) <= 100 + 1e-4)
    np.testing.assert_allclose(d["dino_pair"], (d["dino_human"] + d["dino_object"]) / 2)

    same = FM.clip_scores(clip, gen, gen, gen, pair_refs=gen)
    assert set(same) == {"clip_i_human", "clip_i_object", "clip_i_pair"}
    for v in same.values():
        np.testing.assert_allclose(v, 100.0, atol=1e-3)


def test_human_and_object_use_the_regions_found(dino):
    gen = _images(2, 9, size=(56, 112))
    humans, objects = _images(2, 11, size=(40, 40)), _images(2, 12, size=(30, 50))
    regions = Regions(humans, objects, np.ones(2, bool), np.ones(2, bool), [None, None])
    d = FM.dino_scores(dino, gen, humans, objects, pair_refs=gen, regions=regions)
    np.testing.assert_allclose(d["dino_human"], 100.0, atol=1e-3)
    np.testing.assert_allclose(d["dino_object"], 100.0, atol=1e-3)
    np.testing.assert_allclose(d["dino_pair"], 100.0, atol=1e-3)  # the pair compares the whole image
    whole = FM.dino_scores(dino, gen, humans, objects)  # no regions: the whole image for both roles
    assert whole["dino_human"][0] < 99.9


def test_scores_reject_bad_input(dino, clip):
    imgs = _images(2, 10)
    with pytest.raises(ValueError, match="human"):
        FM.dino_scores(dino, imgs, imgs[:1], imgs)
    with pytest.raises(ValueError, match="uint8"):
        FM.dino_scores(dino, [im.astype(np.float32) for im in imgs], imgs, imgs)
    with pytest.raises(ValueError, match="regions"):
        FM.dino_scores(
            dino, imgs, imgs, imgs, regions=Regions(imgs[:1], imgs[:1], np.ones(1, bool), np.ones(1, bool), [None])
        )
    with pytest.raises(ValueError, match="'dino' embedder"):
        FM.dino_scores(clip, imgs, imgs, imgs)


def test_bad_folders_raise_choi_error(tmp_path, dino_dir, clip_dir):
    with pytest.raises(ChoiError, match="not found"):
        FM.load_dino(tmp_path / "missing")
    with pytest.raises(ChoiError, match="config.json"):
        FM.load_clip(tmp_path)
    with pytest.raises(ChoiError, match="expected one of"):
        FM.load_dino(clip_dir)  # a CLIP folder is not DINOv2
    with pytest.raises(ChoiError, match="expected one of"):
        FM.load_clip(dino_dir)


def test_folder_without_safetensors_raises_choi_error(tmp_path, dino_dir):
    (tmp_path / "config.json").write_text((dino_dir / "config.json").read_text())
    with pytest.raises(ChoiError) as err:
        FM.load_dino(tmp_path)
    assert "\n" not in str(err.value)
