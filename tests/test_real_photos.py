"""Real photos in, end to end with the shipped choi-tiny: `choi generate`, `choi mask`, jobs and the app.

The photos ship with scikit-image (`skimage.data`): the astronaut's portrait, a motorcycle, a cup of coffee.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from skimage import data as skimage_data

from choi import jobs
from choi.app import Handlers
from choi.cli import main
from choi.pipelines.choi import CHOIPipeline

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = ["--set", "layout_candidates=1"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(skimage_data.astronaut()).save(folder / "portrait.jpg", quality=92)
    Image.fromarray(skimage_data.stereo_motorcycle()[0]).save(folder / "motorcycle.jpg", quality=92)
    Image.fromarray(skimage_data.coffee()).save(folder / "coffee.png")
    return folder


@pytest.fixture(scope="module")
def shipped():
    return CHOIPipeline.from_pretrained("choi-tiny")


@pytest.fixture
def cli(monkeypatch, shipped):
    monkeypatch.setattr(jobs, "load_pipeline", lambda *args, **kwargs: shipped)


def test_generate_a_real_portrait_riding_a_real_motorcycle(photos, cli, tmp_path, caplog):
    out = tmp_path / "out"
    args = ["generate", "--human", str(photos / "portrait.jpg"), "--object", str(photos / "motorcycle.jpg"),
            "--interaction", "ride motorcycle", "--seed", "0", "--out", str(out), *FAST]  # fmt: skip
    assert main(args) == 0
    assert "does not know 'ride motorcycle': drawing it as 'ride bicycle'" in caplog.text  # one notice line
    record = json.loads((out / "choi.json").read_text())
    assert record["references"]["human"]["rule"] == "mediapipe"
    assert record["references"]["object"]["rule"] == "grabcut-salient"
    assert record["interaction_class"] == "ride_bicycle" and record["interaction_drawn"] == "ride bicycle"
    assert 0.42 <= record["interaction_similarity"] < 1
    human = np.asarray(Image.open(out / "reference_human.png"))
    assert human.shape == (128, 128, 4) and 0.2 < (human[..., 3] > 0).mean() < 0.8  # a person, not the frame
    assert np.asarray(Image.open(out / "image_0.png")).shape == (128, 128, 3)


def test_the_object_box_and_the_users_masks_are_used(photos, cli, tmp_path):
    mask = np.zeros((512, 512), np.uint8)
    mask[60:512, 100:420] = 255
    Image.fromarray(mask).save(tmp_path / "person_mask.png")
    out = tmp_path / "out"
    args = ["mask", "--human", str(photos / "portrait.jpg"), "--object", str(photos / "motorcycle.jpg"),
            "--human-mask", str(tmp_path / "person_mask.png"), "--object-box", "0.05,0.1,0.95,0.95",
            "--interaction", "ride bicycle", "--seed", "1", "--out", str(out), *FAST]  # fmt: skip
    assert main(args) == 0
    record = json.loads((out / "choi.json").read_text())
    assert record["references"]["human"]["rule"] == "user-mask"
    assert record["references"]["object"]["rule"] == "grabcut-box"
    assert record["request"]["object_box"] == [0.05, 0.1, 0.95, 0.95] and "stage2" not in record


def test_jobs_take_real_photos(photos, cli, tmp_path):
    line = {"id": "cup", "human": "portrait.jpg", "object": "coffee.png", "interaction": "drinking from a mug",
            "seed": 2, "options": {"layout_candidates": 1}}  # fmt: skip
    (photos / "jobs.jsonl").write_text(json.dumps(line) + "\n")
    assert main(["generate", "--jobs", str(photos / "jobs.jsonl"), "--out", str(tmp_path / "batch")]) == 0
    record = json.loads((tmp_path / "batch" / "cup" / "choi.json").read_text())
    assert record["interaction_class"] in ("drink_with_cup", "hold_cup")
    assert record["references"]["object"]["rule"].startswith("grabcut")


@pytest.mark.parametrize(
    "change,message",
    [
        ({"--human": "coffee.png"}, "found no person in the human reference: give --human-mask"),
        ({"--interaction": "the stock market crashed"}, "unknown interaction 'the stock market crashed'"),
        ({"--object-box": "0.5,0.5,0.4,0.9"}, "object box"),
    ],
)
def test_real_photo_errors_are_one_line_and_write_nothing(photos, cli, tmp_path, capsys, change, message):
    values = {"--human": "portrait.jpg", "--object": "motorcycle.jpg", "--interaction": "ride bicycle", **change}
    args = ["generate", "--out", str(tmp_path / "out")]
    for flag, value in values.items():
        args += [flag, str(photos / value) if value.endswith((".png", ".jpg")) else value]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("choi: error: ") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_the_app_takes_real_photos(photos, shipped, tmp_path):
    app = Handlers(shipped, tmp_path / "outputs")
    request = [str(photos / "portrait.jpg"), str(photos / "coffee.png"), "hold cup", None, None, None, None, None]
    gallery, downloads, references = app.generate_images(*request, None, 1, 0, 0, -1, 0, -1, "layout_candidates=1",
                                                         progress=lambda *a, **k: None)  # fmt: skip
    assert len(gallery) == 1 and [c for _, c in references] == ["human: mediapipe", "object: grabcut-salient"]
    assert any(d.endswith("reference_object.png") for d in downloads)
