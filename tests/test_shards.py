import io
import json
import tarfile
from collections import Counter

import numpy as np
import pytest
import torch

from choi.data.schema import decode, encode
from choi.data.shards import (
    MANIFEST_NAME,
    Manifest,
    ShardDataset,
    ShardInfo,
    ShardWriter,
    SplitInfo,
    file_sha256,
    iter_samples,
    read_manifest,
    shard_name,
    shuffle_buffer,
    write_manifest,
    write_shard,
)
from choi.errors import ChoiError
from fake_samples import random_sample


def _assert_same_sample(a, b):
    assert a.key == b.key
    for name in ("image", "human_mask", "object_mask", "human_ref", "object_ref", "human_ref_mask", "object_ref_mask"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), name
    if a.background is None:
        assert b.background is None
    else:
        assert np.array_equal(a.background, b.background)
    np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-5)
    assert b.keypoints.dtype == np.float32 and b.keypoints.shape == (14, 3)
    for name in ("human_box", "object_box", "interaction", "text", "object_category", "human_id", "object_id"):
        assert getattr(a, name) == getattr(b, name), name
    assert (a.source, a.pair_source, a.meta) == (b.source, b.pair_source, b.meta)


def make_dataset(root, counts_per_split, resolution=16):
    """A dataset folder with fake samples: ``{split: [shard sizes]}``; returns keys per split."""
    root.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(generator="test", generator_version="0", resolution=resolution)
    keys = {}
    for split, sizes in counts_per_split.items():
        shards, index = [], 0
        keys[split] = []
        for k, size in enumerate(sizes):
            samples = [
                random_sample(f"{split}-{index + i:06d}", seed=index + i, resolution=resolution) for i in range(size)
            ]
            keys[split] += [s.key for s in samples]
            index += size
            write_shard(root / shard_name(split, k), (encode(s) for s in samples))
            shards.append(ShardInfo(shard_name(split, k), size, file_sha256(root / shard_name(split, k))))
        manifest.splits[split] = SplitInfo(count=index, shards=shards, complete=True)
    write_manifest(root, manifest)
    return keys


@pytest.mark.parametrize("background", [True, False])
def test_encode_decode_round_trip(background):
    sample = random_sample("train-000001", seed=3, resolution=24, background=background)
    record = encode(sample)
    assert ("background.png" in record) == background
    _assert_same_sample(sample, decode(record))
    # webdataset-style keys with a leading dot decode too
    _assert_same_sample(sample, decode({k if k == "__key__" else "." + k: v for k, v in record.items()}))


def test_writer_reader_round_trip(tmp_path):
    samples = [random_sample(f"train-{i:06d}", seed=i) for i in range(5)]
    write_shard(tmp_path / "train-000000.tar", (encode(s) for s in samples[:3]))
    write_shard(tmp_path / "train-000001.tar", (encode(s) for s in samples[3:]))
    manifest = Manifest(generator="test", generator_version="0", resolution=32)
    manifest.splits["train"] = SplitInfo(
        count=5, shards=[ShardInfo("train-000000.tar", 3), ShardInfo("train-000001.tar", 2)], complete=True
    )
    write_manifest(tmp_path, manifest)

    assert read_manifest(tmp_path) == manifest
    got = list(iter_samples(tmp_path, split="train"))
    assert [s.key for s in got] == [s.key for s in samples]
    for a, b in zip(samples, got, strict=True):
        _assert_same_sample(a, b)
    assert [s.key for s in iter_samples(tmp_path, limit=2)] == [s.key for s in samples[:2]]
    raw = next(iter(ShardDataset(tmp_path, split="train", decode=False)))
    assert raw["__key__"] == samples[0].key and isinstance(raw["json"], bytes)


def test_shard_bytes_are_deterministic_and_portable(tmp_path):
    records = [encode(random_sample(f"test-{i:06d}", seed=i)) for i in range(3)]
    write_shard(tmp_path / "a.tar", records)
    write_shard(tmp_path / "b.tar", records)
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    with tarfile.open(tmp_path / "a.tar") as tar:
        members = tar.getmembers()
    assert len(members) == 3 * len(records[0]) - 3  # all fields but __key__
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(0, 0, 0, "", "", 0o644)}
    assert [m.name for m in members][:2] == ["test-000000.background.png", "test-000000.human_mask.png"]


def test_crash_mid_shard_leaves_nothing_under_the_final_name(tmp_path):
    path = tmp_path / "train-000000.tar"
    with pytest.raises(RuntimeError, match="renderer died"), ShardWriter(path) as writer:
        writer.write(encode(random_sample("train-000000")))
        raise RuntimeError("renderer died")
    assert list(tmp_path.iterdir()) == []  # no final shard and no temp file

    with pytest.raises(ValueError, match="invalid sample key"), ShardWriter(path) as writer:
        writer.write(encode(random_sample("train.0")))
    assert not path.exists()


def _collect(dataset, num_workers):
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=num_workers)
    return [s.key for s in loader]


@pytest.mark.parametrize("sizes", [[3, 3, 3, 3, 2], [6, 5]], ids=["shard-level", "sample-level"])
def test_two_ranks_two_workers_see_every_sample_once(tmp_path, sizes):
    keys = make_dataset(tmp_path, {"train": sizes})["train"]
    seen = []
    for rank in range(2):
        ds = ShardDataset(tmp_path, split="train", rank=rank, world_size=2, shuffle_buffer=4, seed=1)
        mine = _collect(ds, num_workers=2)
        assert mine, f"rank {rank} got nothing"
        seen += mine
    assert Counter(seen) == Counter(keys)  # union is the dataset, nothing duplicated


def test_shuffle_buffer_is_seeded_and_keeps_content(tmp_path):
    keys = make_dataset(tmp_path, {"train": [4, 4, 4]})["train"]

    def order(seed, epoch):
        ds = ShardDataset(tmp_path, split="train", shuffle_buffer=5, seed=seed, decode=False)
        ds.set_epoch(epoch)
        return [r["__key__"] for r in ds]

    assert [r["__key__"] for r in ShardDataset(tmp_path, split="train", decode=False)] == keys
    first = order(0, 0)
    assert sorted(first) == keys and first != keys
    assert order(0, 0) == first
    assert order(0, 1) != first
    assert order(1, 0) != first


def test_shuffle_buffer_function():
    rng = np.random.default_rng(0)
    out = list(shuffle_buffer(range(100), 10, rng))
    assert sorted(out) == list(range(100)) and out != list(range(100))
    assert list(shuffle_buffer(range(3), 10, np.random.default_rng(0))) != []


def test_manifest_errors(tmp_path):
    with pytest.raises(ChoiError, match="does not exist"):
        read_manifest(tmp_path / "missing")
    with pytest.raises(ChoiError, match="no manifest.json"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ChoiError, match="cannot read"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ChoiError, match="format"):
        read_manifest(tmp_path)


def test_incomplete_split_missing_shard_and_unknown_split(tmp_path):
    make_dataset(tmp_path, {"train": [2, 2]})
    with pytest.raises(ChoiError, match="no split 'test'.*train"):
        ShardDataset(tmp_path, split="test")
    (tmp_path / "train-000001.tar").unlink()
    with pytest.raises(ChoiError, match="missing shard"):
        ShardDataset(tmp_path, split="train")
    manifest = read_manifest(tmp_path)
    manifest.splits["train"].complete = False
    write_manifest(tmp_path, manifest)
    with pytest.raises(ChoiError, match="incomplete"):
        list(iter_samples(tmp_path))
    with pytest.raises(ChoiError, match="rank"):
        make_dataset(tmp_path / "x", {"train": [1]})
        ShardDataset(tmp_path / "x", split="train", rank=2, world_size=2)


def test_shards_are_plain_webdataset(tmp_path):
    """Any WebDataset reader can read the shards, not only ours."""
    import webdataset as wds

    keys = make_dataset(tmp_path, {"train": [2, 1]})["train"]
    urls = [str(tmp_path / shard_name("train", k)) for k in range(2)]
    got = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))
    assert [r["__key__"] for r in got] == keys
    assert json.loads(io.BytesIO(got[0]["json"]).read())["schema_version"] == 1


def test_default_split_is_the_first_complete_one(tmp_path):
    make_dataset(tmp_path, {"train": [1], "test": [2]})
    manifest = read_manifest(tmp_path)
    assert manifest.split()[0] == "train"
    manifest.splits["train"].complete = False
    assert manifest.split()[0] == "test"
    manifest.splits["test"].complete = False
    with pytest.raises(ChoiError, match="no complete split"):
        manifest.split()


def test_mask_overlay_colours():
    from choi.data.preview import mask_overlay

    image = np.full((4, 4, 3), 200, np.uint8)
    human = np.zeros((4, 4), bool)
    obj = np.zeros((4, 4), bool)
    human[0, 0] = obj[1, 1] = True
    out = mask_overlay(image, human, obj).astype(int)
    assert out[0, 0, 0] > 150 > out[0, 0, 2]  # human: red
    assert out[1, 1, 2] > 150 > out[1, 1, 0]  # object: blue
    assert (out[3, 3] < 100).all()  # the rest: dimmed target
