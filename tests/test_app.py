"""The web app's handlers, called directly on the real pipeline with a tiny random model.

The browser test drives the page.
"""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from choi.app import Handlers, build_app, draw_box
from choi.pipelines.inputs import HUMAN_COLOUR, OBJECT_COLOUR, mask_preview, read_layout_mask


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


class Spy:
    """The real pipeline, with the requests it was given recorded."""

    def __init__(self, pipe):
        self.pipe, self.requests = pipe, []
        self.options_class = pipe.options_class

    def __call__(self, request, **kwargs):
        self.requests.append(("images", request))
        return self.pipe(request, **kwargs)

    def generate_masks(self, request, **kwargs):
        self.requests.append(("masks", request))
        return self.pipe.generate_masks(request, **kwargs)


@pytest.fixture
def app(tmp_path, tiny_pipeline):
    return Handlers(Spy(tiny_pipeline), tmp_path / "outputs")


def _request(files, interaction="ride bicycle", background=None, box=(None,) * 4):
    return [files["human"], files["object"], interaction, background, *box]


DEFAULTS = (
    0,
    -1,
    0,
    -1,
    "",
)  # the form's "model default" values: stage-1 steps, guidance, stage-2 steps, guidance, options


def test_masks_then_images_with_the_edited_mask(app, files):
    progress = Progress()
    request = _request(files, background=files["background"])
    gallery, editor, previews, references = app.generate_masks(*request, 3, 5, 3, 2.0, 0, -1, "", progress=progress)
    assert [caption for _, caption in gallery] == ["seed 5", "seed 6", "seed 7"]
    assert editor.shape == (48, 80, 3) and len(previews) == 3
    assert [caption for _, caption in references] == ["human: plain-background", "object: plain-background"]
    assert progress.calls and progress.calls[-1] == ((3, 3), "mask stage")
    kind, request = app.pipe.requests[-1]
    assert kind == "masks" and request.mask_steps == 3 and request.mask_guidance == 2.0

    # The user paints part of the object red (now person) and sends the editor's composite.
    edited = previews[1].copy()
    edited[0:4, 0:4] = HUMAN_COLOUR
    value = {"background": previews[1], "layers": [], "composite": edited}
    gallery, downloads, _ = app.generate_images(*_request(files, background=files["background"]), value, 2, 11, 0, -1,
                                             2, 1.5, "prior_strength=1,1", progress=Progress())  # fmt: skip
    kind, request = app.pipe.requests[-1]
    human, obj = read_layout_mask(request.mask)
    painted = np.zeros((48, 80), bool)
    painted[0:4, 0:4] = True
    assert kind == "images"
    np.testing.assert_array_equal(human, (previews[1] == HUMAN_COLOUR).all(-1) | painted)
    np.testing.assert_array_equal(obj, (previews[1] == OBJECT_COLOUR).all(-1) & ~painted)
    assert request.steps == 2 and request.guidance == 1.5 and request.seed == 11 and request.mask_steps is None
    assert request.options == {"prior_strength": "1,1"}
    assert [caption for _, caption in gallery] == ["seed 11", "seed 12"]
    names = sorted(Path(d).name for d in downloads)
    assert names == ["choi.json", "image_0.png", "image_1.png", "mask_0_preview.png", "mask_1_preview.png",
                     "reference_human.png", "reference_object.png"]  # fmt: skip
    outputs = (app.outputs).resolve()
    assert all(Path(d).resolve().is_relative_to(outputs) for d in downloads)
    record = json.loads(Path(downloads[0]).parent.joinpath("choi.json").read_text())
    assert record["stage1"]["source"] == "user" and record["options"]["prior_strength"] == [1.0, 1.0]


def test_images_without_a_mask_run_both_stages(app, files):
    gallery, *_ = app.generate_images(*_request(files, box=(0.1, 0.2, 0.9, 1.0)), None, 1, None, *DEFAULTS,
                                     progress=Progress())  # fmt: skip
    request = app.pipe.requests[-1][1]
    assert request.mask is None and request.box == (0.1, 0.2, 0.9, 1.0)
    assert request.seed is None and request.steps is None and request.guidance is None and request.options == {}
    assert len(gallery) == 1 and Path(gallery[0][0]).is_file()


@pytest.mark.parametrize(
    "change,message",
    [
        ({"human": None}, "upload the person"),
        ({"object": "text"}, "not an image"),
        ({"interaction": "juggling a cat"}, "unknown interaction"),
        ({"interaction": ""}, "give the interaction"),
        ({"box": (0.1, None, 0.5, 0.5)}, "all four"),
        ({"box": (0.5, 0.5, 0.2, 0.9)}, "invalid"),
        ({"options": "fit_object=maybe"}, "fit_object"),
        ({"options": "warp=1"}, "has no option 'warp'"),
        ({"num_images": 99}, "num_images"),
        ({"guidance": 1e308}, "guidance"),
    ],
)
def test_bad_requests_are_messages_not_crashes(app, files, change, message):
    kwargs = {"interaction": change.get("interaction", "ride bicycle"), "box": change.get("box", (None,) * 4)}
    args = _request(files, **kwargs)
    if "human" in change:
        args[0] = change["human"]
    if "object" in change:
        args[1] = files[change["object"]]
    settings = [change.get("num_images", 1), None, 0, -1, 0, change.get("guidance", -1), change.get("options", "")]
    with pytest.raises(gr.Error) as info:
        app.generate_images(*args, None, *settings, progress=Progress())
    assert message in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(gr.Error):
        app.generate_masks(*args, *settings, progress=Progress())


def test_bad_masks_and_uploads(app, files):
    with pytest.raises(gr.Error, match="red"):
        app.generate_images(*_request(files), np.zeros((64, 64, 3), np.uint8), 1, None, *DEFAULTS,
                            progress=Progress())  # fmt: skip
    with pytest.raises(gr.Error, match="not an image"):
        app.check_upload(files["text"], "object image")


def test_the_mask_decoder_ignores_the_dimmed_background():
    human = np.zeros((32, 32), bool)
    human[4:20, 4:12] = True
    obj = np.zeros((32, 32), bool)
    obj[10:28, 16:30] = True
    obj &= ~human
    background = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    background[..., 0] = 255  # as red as a background can be
    h, o = read_layout_mask(mask_preview(human, obj, background))
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


def test_build_app_wires_the_pipeline(tmp_path, tiny_pipeline):
    demo = build_app(tiny_pipeline, tmp_path / "outputs")
    assert isinstance(demo, gr.Blocks) and (tmp_path / "outputs").is_dir()
    ids = {getattr(block, "elem_id", None) for block in demo.blocks.values()}
    assert {"human", "object", "interaction", "generate-masks", "generate-images", "gallery", "options"} <= ids


def test_a_reference_is_fixed_by_drawing_or_uploading_its_mask(app, files, tmp_path):
    photo = app.photo_to_draw_on(files["human"])
    assert photo["background"].shape[:2] == (64, 64) and app.photo_to_draw_on(files["text"]) is None
    paint = np.zeros((64, 64, 4), np.uint8)
    paint[20:50, 26:38, 3] = 255  # the user paints part of the person
    drawn = {"background": photo["background"], "layers": [paint], "composite": None}
    mask = np.zeros((64, 64), np.uint8)
    mask[30:50, 10:54] = 255
    Image.fromarray(mask).save(tmp_path / "object_mask.png")
    *_, references = app.generate_masks(*_request(files), 1, 0, *DEFAULTS, drawn, None, None,
                                        str(tmp_path / "object_mask.png"), "", progress=Progress())  # fmt: skip
    request = app.pipe.requests[-1][1]
    assert request.human_mask.sum() == 30 * 12 and request.object_mask == str(tmp_path / "object_mask.png")
    assert [caption for _, caption in references] == ["human: user-mask", "object: user-mask"]
    human_cut = references[0][0]  # framed as choi-tiny's references, at its model size: 32 px here
    assert human_cut.shape == (32, 32, 4) and 0 < (human_cut[..., 3] > 0).mean() < 0.5
    with pytest.raises(gr.Error, match="object box"):
        app.generate_masks(
            *_request(files), 1, 0, *DEFAULTS, None, None, None, None, "0.5,0.5,0.2", progress=Progress()
        )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "99999"], "--port must be in [1, 65535], got 99999"),
        (["--keep-outputs-hours", "nan"], "--keep-outputs-hours must be in (0, 8760]"),
        (["--outputs", "FILE"], "file' exists and is not a folder"),
    ],
)
def test_app_command_errors_are_one_line_before_the_model_loads(tmp_path, monkeypatch, capsys, args, message):
    from choi import jobs
    from choi.cli import main

    (tmp_path / "file").write_text("x")
    monkeypatch.setattr(jobs, "load_pipeline", lambda *a, **k: pytest.fail("the model loaded before the check"))
    assert main(["app", *[str(tmp_path / "file") if a == "FILE" else a for a in args]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
