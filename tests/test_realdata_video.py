"""`choi data video` on an MP4 of a rendered HOI-World pair pedalling: mined pairs vs the renderer's truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from choi.cli import main
from choi.data.shards import iter_samples, read_manifest
from choi.world import render_sequence

av = pytest.importorskip("av")

FPS = 8
N_FRAMES = 20
RES = 256


def _fmt(box) -> str:
    return ",".join(f"{v:.4f}" for v in box)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, list]:
    """A 2.5 s MP4 of one rider pedalling (two crank turns) and the rendered ground-truth frames."""
    phases = np.linspace(0, 2, N_FRAMES, endpoint=False)
    frames = render_sequence(3, "bicycle", 5, "ride_bicycle", seed=1, phases=phases, resolution=RES)
    path = tmp_path_factory.mktemp("video") / "ride.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width = stream.height = RES
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "16"}
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f.image, format="rgb24")))
        out.mux(stream.encode())
    return path, frames


@pytest.fixture(scope="module")
def built(clip, tmp_path_factory) -> Path:
    path, frames = clip
    out = tmp_path_factory.mktemp("video_out") / "ds"
    boxes = f"{_fmt(frames[0].human_box)}:{_fmt(frames[0].object_box)}"
    argv = ["data", "video", "--video", str(path), "--interaction", "riding a bike", "--first-boxes", boxes]
    argv += ["--out", str(out), "--sample-fps", str(FPS), "--min-gap", "0.5", "--resolution", "64"]
    assert main(argv + ["--max-pairs", "6", "--shard-size", "4"]) == 0
    return out


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _in_frame(box, crop) -> tuple[float, ...]:
    """A sample's normalised box back in normalised frame coordinates (see meta['crop'])."""
    x0, y0, side = crop
    return tuple((o + v * side) / RES for v, o in zip(box, (x0, y0, x0, y0), strict=True))


def test_mined_pairs_are_the_same_pair_in_different_poses(built, clip):
    _, frames = clip
    manifest = read_manifest(built)
    assert manifest.generator == "video" and manifest.splits["train"].complete
    samples = list(iter_samples(built, split="train"))
    assert 3 <= len(samples) <= 6
    targets = [s.meta["target_frame"] for s in samples]
    assert len(set(targets)) == len(targets)  # each frame is the target of one pair at most
    for s in samples:
        i, j = s.meta["ref_frame"], s.meta["target_frame"]
        assert s.source == "video" and s.pair_source == "video" and s.interaction == "ride_bicycle"
        assert (j - i) / FPS >= 0.5 or (i - j) / FPS >= 0.5
        truth = frames[j]
        # The target shows frame j's pair where the renderer put it.
        assert _iou(_in_frame(s.human_box, s.meta["crop"]), truth.human_box) > 0.6
        assert _iou(_in_frame(s.object_box, s.meta["crop"]), truth.object_box) > 0.6
        # The pose differs from the reference frame's, by the renderer's own keypoints.
        gt_move = np.linalg.norm(frames[i].keypoints[:, :2] - truth.keypoints[:, :2], axis=1).max()
        assert gt_move > 0.02, (i, j, gt_move)
        # Same identity: the reference person is frame i's rider (shirt, skin, hair colours).
        ref_colour = s.human_ref[s.human_ref_mask].mean(0)
        gt_colour = frames[i].image[frames[i].human_mask].mean(0)
        assert np.abs(ref_colour - gt_colour).max() < 25, (ref_colour, gt_colour)


def test_rerun_resumes_without_duplicates(built, clip):
    path, frames = clip
    keys = [s.key for s in iter_samples(built, split="train")]
    (built / "train-000000.tar").unlink()
    (built / "parts" / "train-000000.json").unlink()
    boxes = f"{_fmt(frames[0].human_box)}:{_fmt(frames[0].object_box)}"
    argv = ["data", "video", "--video", str(path), "--interaction", "riding a bike", "--first-boxes", boxes]
    argv += ["--out", str(built), "--sample-fps", str(FPS), "--min-gap", "0.5", "--resolution", "64"]
    assert main(argv + ["--max-pairs", "6", "--shard-size", "4"]) == 0
    assert [s.key for s in iter_samples(built, split="train")] == keys


def test_per_frame_boxes_file(clip, tmp_path):
    path, frames = clip
    boxes = [{"frame": k, "person": list(f.human_box), "object": list(f.object_box)} for k, f in enumerate(frames)]
    del boxes[4]  # a sampled frame without boxes is rejected, not fatal
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    argv = [
        "data",
        "video",
        "--video",
        str(path),
        "--interaction",
        "ride bicycle",
        "--boxes",
        str(tmp_path / "boxes.json"),
    ]
    argv += ["--out", str(tmp_path / "ds"), "--sample-fps", "4", "--max-pairs", "2", "--resolution", "64"]
    assert main(argv) == 0
    samples = list(iter_samples(tmp_path / "ds", split="train"))
    assert len(samples) == 2 and all(s.pair_source == "video" for s in samples)
    rejects = [json.loads(line) for line in (tmp_path / "ds" / "rejects.jsonl").read_text().splitlines()]
    assert [(r["reason"], r["item"]) for r in rejects] == [("no_box", "frame-4")]


def test_bad_arguments_are_one_line_exit_2(clip, tmp_path, capsys):
    path, _ = clip
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 1000)
    good = "0.1,0.1,0.5,0.9:0.4,0.5,0.9,0.9"
    cases = [
        (["--video", str(tmp_path / "none.mp4"), "--first-boxes", good], "does not exist"),
        (["--video", str(junk), "--first-boxes", good], "cannot open video"),
        (["--video", str(path), "--first-boxes", "0.1,0.1,0.5"], "--first-boxes"),
        (["--video", str(path), "--first-boxes", "0.5,0.1,0.1,0.9:0.4,0.5,0.9,0.9"], "x1 < x2"),
        (["--video", str(path), "--first-boxes", good, "--shard", "x"], "--shard"),
    ]
    for args, expected in cases:
        code = main(["data", "video", "--interaction", "ride bicycle", *args, "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and expected in err and len(err.splitlines()) == 1, err
