"""The web app's handlers, called directly with a fake pipeline (the browser test drives the real page)."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from choi.app import Handlers, build_app, draw_box, masks_from_preview
from choi.pipelines.choi import DEFAULT_PRIOR_STRENGTH, LAYOUT_CANDIDATES
from choi.pipelines.mask import HUMAN_COLOUR, OBJECT_COLOUR, mask_preview
from fake_pipeline import FakePipeline


@pytest.fixture
def files(tmp_path):
    human = np.full((64, 64, 3), 240, np.uint8)
    human[10:60, 24:40] = (200, 120, 90)
    obj = np.full((64, 64, 3), 240, np.uint8)
    obj[30:50, 10:54] = (30, 160, 60)
    paths = {}
    for name, array in (("human", human), ("object", obj), ("background", np.full((48, 80, 3), 90, np.uint8))):
        paths[name] = str(tmp_path / f"{name}.png")
        Image.fromarray(array).save(paths[name])
    paths["text"] = str(tmp_path / "notes.png")
    Path(paths["text"]).write_text("not an image")
    return paths


class Progress:
    def __init__(self):
        self.calls = []

    def __call__(self, value, desc=None, unit=None):
        self.calls.append((value, desc))


@pytest.fixture
def app(tmp_path):
    return Handlers(FakePipeline(), tmp_path / "outputs")


def _request(files, interaction="ride bicycle", background=None, box=(None,) * 4):
    return [files["human"], files["object"], interaction, background, *box]


def test_masks_then_images_with_the_edited_mask(app, files):
    progress = Progress()
    gallery, editor, previews = app.generate_masks(*_request(files, background=files["background"]), 3, 5, None, None,
                                                   progress=progress)  # fmt: skip
    assert [caption for _, caption in gallery] == ["seed 5", "seed 6", "seed 7"]
    assert editor.shape == (48, 80, 3) and len(previews) == 3
    assert progress.calls and progress.calls[-1] == ((2, 2), "mask stage")

    # The user paints part of the object red (now person) and sends the editor's composite.
    edited = previews[1].copy()
    edited[0:4, 0:4] = HUMAN_COLOUR
    value = {"background": previews[1], "layers": [], "composite": edited}
    gallery, downloads = app.generate_images(*_request(files, background=files["background"]), value, 2, 11, 4, 1.5,
                                             progress=Progress())  # fmt: skip
    call = app.pipe.calls[-1]
    human, obj = call["mask"]
    assert human[0:4, 0:4].all() and human.sum() == (previews[1] == HUMAN_COLOUR).all(-1).sum() + 16
    assert obj.sum() == (previews[1] == OBJECT_COLOUR).all(-1).sum()
    assert call["num_inference_steps"] == 4 and call["guidance_scale"] == 1.5 and call["seed"] == 11
    assert [caption for _, caption in gallery] == ["seed 11", "seed 12"]
    names = sorted(Path(d).name for d in downloads)
    assert names == ["choi.json", "image_0.png", "image_1.png", "mask_0_preview.png", "mask_1_preview.png"]
    outputs = (app.outputs).resolve()
    assert all(Path(d).resolve().is_relative_to(outputs) for d in downloads)
    assert json.loads(Path(downloads[0]).parent.joinpath("choi.json").read_text())["inputs"]["mask"] == "edited"


def test_images_without_a_mask_run_both_stages(app, files):
    gallery, _ = app.generate_images(*_request(files, box=(0.1, 0.2, 0.9, 1.0)), None, 1, None, None, None,
                                     progress=Progress())  # fmt: skip
    assert app.pipe.calls[-1]["mask"] is None and app.pipe.calls[-1]["box"] == (0.1, 0.2, 0.9, 1.0)
    app.generate_images(*_request(files), None, 1, -1, 0, -1, progress=Progress())  # the UI's "default" values
    call = app.pipe.calls[-1]
    assert call["seed"] is None and call["num_inference_steps"] is None and call["guidance_scale"] is None
    assert len(gallery) == 1 and Path(gallery[0][0]).is_file()


@pytest.mark.parametrize(
    "change,message",
    [
        ({"human": None}, "upload the person"),
        ({"object": "text"}, "not an image"),
        ({"interaction": "juggling a cat"}, "unknown interaction"),
        ({"interaction": ""}, "empty interaction"),
        ({"box": (0.1, None, 0.5, 0.5)}, "all four"),
        ({"box": (0.5, 0.5, 0.2, 0.9)}, "invalid"),
    ],
)
def test_bad_requests_are_messages_not_crashes(app, files, change, message):
    kwargs = {"interaction": change.get("interaction", "ride bicycle"), "box": change.get("box", (None,) * 4)}
    args = _request(files, **kwargs)
    if "human" in change:
        args[0] = change["human"]
    if "object" in change:
        args[1] = files[change["object"]]
    with pytest.raises(gr.Error) as info:
        app.generate_images(*args, None, 1, None, None, None, progress=Progress())
    assert message in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(gr.Error):
        app.generate_masks(*args, 1, None, None, None, progress=Progress())


def test_object_fit_setting_reaches_both_stages(app, files):
    app.generate_masks(*_request(files), 1, None, None, None, progress=Progress())
    assert app.pipe.calls[-1]["fit_object"] is True  # the pipeline's default, as in the CLI
    app.generate_masks(*_request(files), 1, None, None, None, False, progress=Progress())
    assert app.pipe.calls[-1]["method"] == "generate_masks" and app.pipe.calls[-1]["fit_object"] is False
    app.generate_images(*_request(files), None, 1, None, None, None, False, progress=Progress())
    assert app.pipe.calls[-1]["method"] == "__call__" and app.pipe.calls[-1]["fit_object"] is False


def test_layout_candidates_setting_reaches_stage_one(app, files):
    app.generate_masks(*_request(files), 1, None, None, None, progress=Progress())
    assert app.pipe.calls[-1]["layout_candidates"] == LAYOUT_CANDIDATES
    app.generate_masks(*_request(files), 1, None, None, None, True, 2.0, progress=Progress())  # a slider's float
    assert app.pipe.calls[-1]["layout_candidates"] == 2
    app.generate_images(*_request(files), None, 1, None, None, None, True, 0.5, 1.0, 1, progress=Progress())
    assert app.pipe.calls[-1]["method"] == "__call__" and app.pipe.calls[-1]["layout_candidates"] == 1
    with pytest.raises(gr.Error, match="layout candidates"):
        app.generate_masks(*_request(files), 1, None, None, None, True, 0, progress=Progress())


def test_bad_settings_and_bad_masks(app, files):
    with pytest.raises(gr.Error, match="candidates"):
        app.generate_images(*_request(files), None, 99, None, None, None, progress=Progress())
    with pytest.raises(gr.Error, match="red"):
        app.generate_images(*_request(files), np.zeros((64, 64, 3), np.uint8), 1, None, None, None,
                            progress=Progress())  # fmt: skip
    with pytest.raises(gr.Error, match="not an image"):
        app.check_upload(files["text"], "object image")


def test_masks_from_preview_ignores_the_dimmed_background():
    human = np.zeros((32, 32), bool)
    human[4:20, 4:12] = True
    obj = np.zeros((32, 32), bool)
    obj[10:28, 16:30] = True
    obj &= ~human
    background = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    background[..., 0] = 255  # as red as a background can be
    h, o = masks_from_preview(mask_preview(human, obj, background))
    np.testing.assert_array_equal(h, human)
    np.testing.assert_array_equal(o, obj)


def test_box_by_two_clicks(app, files):
    preview = draw_box(np.full((48, 80, 3), 90, np.uint8), (0.25, 0.5, 0.75, 1.0))
    assert preview.shape == (48, 80, 3) and tuple(preview[24, 40]) == (255, 220, 0)

    def click(x, y):
        return gr.SelectData(None, {"index": [x, y], "value": None})

    first = app.click_corner(files["background"], None, click(60, 40))
    assert first[0] == (0.75, 40 / 48)
    corner, *box = app.click_corner(files["background"], first[0], click(20, 12))
    assert corner is None and box == [0.25, 0.25, 0.75, round(40 / 48, 3)]
    assert app.show_box(files["background"], *box).shape == (48, 80, 3)
    assert app.show_box(files["background"], 0.1, None, None, None).shape == (48, 80, 3)  # half typed: no box yet


def test_build_app_wires_the_pipeline(tmp_path):
    demo = build_app(FakePipeline(), tmp_path / "outputs")
    assert isinstance(demo, gr.Blocks) and (tmp_path / "outputs").is_dir()
    ids = {getattr(block, "elem_id", None) for block in demo.blocks.values()}
    assert {"human", "object", "interaction", "generate-masks", "generate-images", "gallery"} <= ids


def test_prior_strength_sliders_reach_stage_two(app, files):
    app.generate_images(*_request(files), None, 1, None, None, None, True, 0.25, 1.0, progress=Progress())
    assert app.pipe.calls[-1]["prior_strength"] == (0.25, 1.0)
    app.generate_images(*_request(files), None, 1, None, None, None, progress=Progress())
    assert app.pipe.calls[-1]["prior_strength"] == DEFAULT_PRIOR_STRENGTH
    with pytest.raises(gr.Error, match="prior strength"):
        app.generate_images(*_request(files), None, 1, None, None, None, True, 1.5, 1.0, progress=Progress())
