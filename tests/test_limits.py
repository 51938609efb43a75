"""Abuse cases: one set of limits in the one validator, the same one-line errors in Python, CLI, jobs and app;
big backgrounds scaled to the output cap; the app's outputs cleaned and its uploads in a folder of its own.

The pipeline is the real one on a tiny random choi-tiny-family model (tests/tiny_choi.py).
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from gradio.components.image_editor import EditorData
from gradio.data_classes import FileData
from PIL import Image

from choi import jobs
from choi.app import Handlers, build_app, clean_outputs, launch, one_line_errors
from choi.cli import main
from choi.data.segment import load_image
from choi.errors import ChoiError
from choi.pipelines import choi as choi_module
from choi.pipelines.inputs import parse_box
from choi.pipelines.request import MAX_INTERACTION_CHARS, GenerationRequest
from choi.pipelines.stages import parse_options, parse_set
from choi.pipelines.tiny import TinyOptions
from choi.vocabulary import resolve

pytestmark = pytest.mark.usefixtures("one_thread")

LONG = "ride bicycle " * 800  # 10 KB of interaction text
QUOTED = 60 + 40  # an error may quote 60 characters of user text, plus its own words around them


@pytest.fixture
def refs(tmp_path):
    human = np.full((64, 64, 3), 240, np.uint8)
    human[10:60, 24:40] = (200, 120, 90)
    obj = np.full((64, 64, 3), 240, np.uint8)
    obj[30:50, 10:54] = (30, 160, 60)
    rng = np.random.default_rng(0)
    background = rng.integers(0, 256, (80, 100, 3), dtype=np.uint8)  # noise: any resampling would show
    paths = {}
    for name, array in (("human", human), ("object", obj), ("background", background)):
        paths[name] = str(tmp_path / f"{name}.png")
        Image.fromarray(array).save(paths[name])
    paths["text"] = str(tmp_path / "notes.png")
    Path(paths["text"]).write_text("not an image")
    return paths


def _request(refs, **fields):
    return GenerationRequest(human=refs["human"], object=refs["object"], interaction="ride bicycle", **fields)


# --- Python: the one validator ------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"interaction": LONG}, f"at most {MAX_INTERACTION_CHARS}"),
        ({"guidance": math.inf}, "guidance"),
        ({"guidance": 1e308}, "guidance"),
        ({"guidance": math.nan}, "guidance"),
        ({"mask_guidance": -math.inf}, "mask_guidance"),
        ({"seed": 2**64}, "seed"),
        ({"seed": 2**63}, "seed"),
        ({"seed": 2**63 - 1, "num_images": 2}, "seed"),  # image 1 would get 2^63
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"num_images": math.nan}, "num_images"),
        ({"num_images": 2.5}, "num_images"),
        ({"num_images": True}, "num_images"),
        ({"steps": 2.0}, "steps"),
        ({"max_output_side": 10**9}, "max_output_side"),
        ({"max_output_side": 100.5}, "max_output_side"),
        ({"box": (0.1, 0.1, math.nan, 0.9)}, "box"),
        ({"box": "0.1,0.1,inf,0.9"}, "box"),
        ({"box": "x" * 10_000}, "box"),
    ],
)
def test_bad_fields_are_one_short_line(refs, fields, message):
    values = {"interaction": "ride bicycle", **fields}
    with pytest.raises(ChoiError) as info:
        GenerationRequest(human=refs["human"], object=refs["object"], **values)
    text = str(info.value)
    assert message in text and "\n" not in text and len(text) < 200


def test_the_largest_seed_is_accepted(refs):
    assert _request(refs, seed=2**63 - 1).seed == 2**63 - 1


@pytest.mark.parametrize(
    "line, message",
    [
        ('"num_images": 2.5', "num_images"),
        ('"num_images": NaN', "num_images"),
        ('"num_images": 2.0', "num_images"),  # JSON's 2.0 is not silently 2 images
        ('"seed": 18446744073709551616', "seed"),
        ('"guidance": Infinity', "guidance"),
        ('"guidance": NaN', "guidance"),
        ('"max_output_side": 1e3', "max_output_side"),
        (f'"interaction": "{LONG}"', "at most"),
        (f'"{"k" * 5000}": 1', "unknown key"),
    ],
)
def test_json_lines_get_the_same_limits(refs, line, message):
    base = {"human": refs["human"], "object": refs["object"], "interaction": "ride bicycle"}
    values = {**base, **json.loads("{" + line + "}")}  # json accepts NaN and Infinity: the validator must not
    with pytest.raises(ChoiError) as info:
        GenerationRequest.from_dict(values)
    assert message in str(info.value) and len(str(info.value)) < 500


@pytest.mark.parametrize(
    "options, message",
    [
        ({"prior_strength": (math.nan, 1.0)}, "prior strength"),
        ({"prior_strength": "inf,1"}, "prior strength"),
        ({"composite_margin": math.inf}, "composite_margin"),
        ({"composite_margin": math.nan}, "composite_margin"),
        ({"strength": math.nan}, "strength"),
        ({"layout_candidates": 2.5}, "layout_candidates"),
        ({"layout_candidates": "2.5"}, "layout_candidates"),
        ({"zoom": "x" * 10_000}, "zoom"),
        ({"k" * 10_000: 1}, "has no option"),
    ],
)
def test_family_options_are_finite_and_whole_where_meant(options, message):
    with pytest.raises(ChoiError) as info:
        parse_options(TinyOptions, options, "choi-tiny")
    assert message in str(info.value) and len(str(info.value)) < 400


@pytest.mark.parametrize(
    "call",
    [
        lambda: resolve("zqx " * 3000),
        lambda: resolve("kick " * 3000 + " bicycle"),
        lambda: parse_box("1," * 5000),
        lambda: parse_set(["x" * 10_000]),
        lambda: load_image("/nowhere/" + "a" * 10_000 + ".png"),
        lambda: load_image("/nowhere/" + "a" * 200 + "/missing.png"),
    ],
)
def test_errors_quote_at_most_60_characters_of_user_text(call):
    with pytest.raises(ChoiError) as info:
        call()
    text = str(info.value)
    longest_run = max(len(run) for run in text.replace("/", " ").split())
    assert longest_run <= 66 and "\n" not in text, text  # 60 characters, the quotes and '...'
    if "missing.png" in text or "/nowhere/" in text:
        assert len(text) < 200


# --- outputs: the cap, the composite, choi.json ---------------------------------------------------


def test_a_background_over_the_cap_is_scaled_said_and_recorded(refs, tiny_pipeline, tmp_path, caplog):
    caplog.set_level("INFO")
    out = tiny_pipeline(_request(refs, background=refs["background"], box=(0.2, 0.2, 0.8, 0.9), seed=0,
                                 max_output_side=64))  # fmt: skip
    assert out.images[0].shape == (51, 64, 3) and out.human_masks.shape == (1, 51, 64)
    assert out.metadata["size"] == [51, 64] and out.metadata["scaled_from"] == [80, 100]
    assert "scaled to 64x51" in caplog.text
    out.save(tmp_path / "run")
    record = json.loads((tmp_path / "run" / "choi.json").read_text())
    assert record["scaled_from"] == [80, 100] and record["request"]["max_output_side"] == 64


def test_under_the_cap_the_output_keeps_the_background_size_and_its_pixels(refs, tiny_pipeline, monkeypatch):
    # Stages drawn at a working size smaller than the output: only the final composite touches its pixels.
    monkeypatch.setattr(choi_module, "WORK_SIDE", 16)  # the tiny model's own 32 px is then the working size
    bg = np.asarray(Image.open(refs["background"]))
    human, obj = np.zeros((2, 80, 100), bool)
    human[20:40, 20:35] = True
    obj[30:45, 40:60] = True
    out = tiny_pipeline(_request(refs, background=refs["background"], mask=(human, obj), seed=0))
    assert out.images[0].shape == bg.shape and out.human_masks.shape == (1, 80, 100)
    assert out.metadata["work_size"] == [26, 32] and "scaled_from" not in out.metadata
    far = np.ones((80, 100), bool)  # beyond three working pixels (~9 output pixels) around the layout
    far[10:55, 10:70] = False
    assert np.array_equal(out.images[0][far], bg[far])  # the background's own pixels, not a resampled copy
    assert not np.array_equal(out.images[0][~far], bg[~far])  # the pair was painted
    assert out.human_masks[0][25, 25] and not out.human_masks[0][5, 5]  # the layout at the output size


def test_a_big_output_has_a_small_preview_that_reads_back_as_its_layout(refs, tiny_pipeline, tmp_path, monkeypatch):
    monkeypatch.setattr(choi_module, "PREVIEW_MAX_SIDE", 50)  # the 100x80 background stands for a phone photo
    human, obj = np.zeros((2, 80, 100), bool)
    human[20:40, 20:35] = True
    obj[30:45, 40:60] = True
    out = tiny_pipeline(_request(refs, background=refs["background"], mask=(human, obj), seed=0))
    out.save(tmp_path / "run")
    preview = np.asarray(Image.open(tmp_path / "run" / "mask_0_preview.png"))
    assert preview.shape == (40, 50, 3)  # shrunk to 50 px on the long side; the masks stay full size
    assert np.asarray(Image.open(tmp_path / "run" / "mask_0_human.png")).shape == (80, 100)
    again = tiny_pipeline(_request(refs, background=refs["background"], mask=tmp_path / "run" / "mask_0_preview.png",
                                   seed=0))  # fmt: skip
    assert again.images[0].shape == (80, 100, 3)
    assert (again.human_masks[0] == human).mean() > 0.97 and (again.object_masks[0] == obj).mean() > 0.97


def test_choi_json_never_holds_nan_or_infinity(refs, tiny_pipeline, tmp_path):
    out = tiny_pipeline(_request(refs, seed=0))
    out.metadata["stage2"]["guidance"] = math.inf  # whatever a future stage records
    with pytest.raises(ValueError, match="JSON"):
        out.save(tmp_path / "run")
    assert not (tmp_path / "run" / "choi.json").exists()


# --- CLI and jobs ---------------------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch, tiny_pipeline):
    monkeypatch.setattr(jobs, "load_pipeline", lambda *a, **k: tiny_pipeline)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--interaction", LONG], "at most 300"),
        (["--guidance", "inf"], "guidance"),
        (["--guidance", "nan"], "guidance"),
        (["--guidance", "1e308"], "guidance"),
        (["--seed", str(2**64)], "seed"),
        (["--set", "prior_strength=nan,1"], "prior strength"),
        (["--set", "composite_margin=inf"], "composite_margin"),
        (["--max-output-side", "100000"], "max_output_side"),
        (["--background", "b" * 5000], "not found"),  # a name too long for the file system
        (["--background", "/nowhere/" + "b" * 300 + "/bg.png"], "bg.png"),
    ],
)
def test_cli_refuses_in_one_line(refs, cli, tmp_path, capsys, flags, message):
    args = ["generate", "--human", refs["human"], "--object", refs["object"], "--out", str(tmp_path / "o")]
    if "--interaction" not in flags:
        args += ["--interaction", "ride bicycle"]
    assert main([*args, *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and len(err) < 300 and not (tmp_path / "o").exists()


def test_cli_max_output_side(refs, cli, tmp_path):
    args = ["generate", "--human", refs["human"], "--object", refs["object"], "--interaction", "ride bicycle",
            "--background", refs["background"], "--box", "0.2,0.2,0.8,0.9", "--seed", "0", "--max-output-side", "64",
            "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(args) == 0
    assert Image.open(tmp_path / "o" / "image_0.png").size == (64, 51)
    assert json.loads((tmp_path / "o" / "choi.json").read_text())["scaled_from"] == [80, 100]


def test_jobs_lines_get_the_same_limits(refs, cli, tmp_path, capsys):
    good = {"human": refs["human"], "object": refs["object"], "interaction": "ride bicycle", "seed": 0}
    lines = [{**good, "id": "half", "num_images": 2.5}, {**good, "id": "long", "interaction": LONG}]
    lines.append({**good, "id": "inf", "guidance": math.inf})  # json.dumps writes Infinity, json.loads reads it
    text = "\n".join(json.dumps(line) for line in lines) + "\n"
    (tmp_path / "jobs.jsonl").write_text(text)
    assert main(["generate", "--jobs", str(tmp_path / "jobs.jsonl"), "--out", str(tmp_path / "o")]) == 2
    assert "3 of 3 jobs failed" in capsys.readouterr().err


# --- app ------------------------------------------------------------------------------------------


class Progress:
    def __call__(self, *args, **kwargs):
        pass


@pytest.mark.parametrize(
    "change, message",
    [
        ({"interaction": LONG}, "at most 300"),
        ({"num_images": 2.5}, "num_images"),
        ({"num_images": math.nan}, "num_images"),
        ({"seed": 2**64}, "seed"),
        ({"seed": math.inf}, "seed"),
        ({"guidance": math.inf}, "guidance"),
        ({"guidance": math.nan}, "guidance"),
        ({"options": "composite_margin=nan"}, "composite_margin"),
    ],
)
def test_app_refuses_in_one_line(refs, tiny_pipeline, tmp_path, change, message):
    h = Handlers(tiny_pipeline, tmp_path / "outputs")
    form = {"num_images": 1, "seed": -1, "guidance": -1, "options": "", "interaction": "ride bicycle", **change}
    args = [refs["human"], refs["object"], form["interaction"], None, None, None, None, None, None]
    settings = [form["num_images"], form["seed"], 0, -1, 0, form["guidance"], form["options"]]
    with pytest.raises(gr.Error) as info:
        h.generate_images(*args, *settings, progress=Progress())
    assert message in str(info.value) and "\n" not in str(info.value) and len(str(info.value)) < 300


def test_app_previews_decode_a_big_background_small(refs, tiny_pipeline, tmp_path):
    big = tmp_path / "big.jpg"
    Image.fromarray(np.full((1500, 3000, 3), 120, np.uint8)).save(big)
    h = Handlers(tiny_pipeline, tmp_path / "outputs")
    assert max(h.show_box(str(big), 0.1, 0.1, 0.5, 0.5).shape[:2]) <= 512
    assert max(h.photo_to_draw_on(str(big))["background"].shape[:2]) <= 1024
    h.check_upload(str(big), "background image")


def test_the_mask_editor_reports_a_bad_file_in_one_line(refs):
    editor = one_line_errors(gr.ImageEditor(type="numpy"), "mask")
    payload = EditorData(background=FileData(path=refs["text"]), layers=[], composite=FileData(path=refs["text"]))
    with pytest.raises(gr.Error) as info:
        editor.preprocess(payload)
    assert "cannot read the mask" in str(info.value) and "\n" not in str(info.value)
    assert info.value.print_exception is False  # no traceback in the log


def test_old_outputs_are_removed(refs, tiny_pipeline, tmp_path):
    outputs = tmp_path / "outputs"
    old, new = outputs / "old", outputs / "new"
    for run in (old, new):
        run.mkdir(parents=True)
        (run / "image_0.png").write_bytes(b"x")
    past = time.time() - 48 * 3600
    os.utime(old, (past, past))
    assert clean_outputs(outputs, 24) == 1 and not old.exists() and new.exists()
    os.utime(new, (past, past))
    build_app(tiny_pipeline, outputs, keep_outputs_hours=24).close()  # cleaned when the app starts
    assert not new.exists()
    h = Handlers(tiny_pipeline, outputs, keep_outputs_hours=24)
    stale = outputs / "stale"
    stale.mkdir()
    os.utime(stale, (past, past))
    h.generate_images(refs["human"], refs["object"], "ride bicycle", *[None] * 6, 1, 0, 0, -1, 0, -1, "",
                      progress=Progress())  # fmt: skip
    assert not stale.exists() and len(list(outputs.iterdir())) == 1  # and at each generation


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_app_serves_its_own_uploads_not_the_shared_gradio_folder(tiny_pipeline, tmp_path, monkeypatch):
    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)  # restored after the test
    shared = Path(gr.utils.get_upload_folder())  # the machine-wide /tmp/gradio
    planted = shared / "choi-test-planted" / "secret.txt"
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_text("not yours")
    port = _free_port()
    demo = launch(tiny_pipeline, port=port, outputs=tmp_path / "outputs", block=False)
    try:
        private = Path(os.environ["GRADIO_TEMP_DIR"])
        assert private.parent.name.startswith("choi-app-") and str(private) == demo.GRADIO_CACHE
        assert not private.is_relative_to(shared)
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/gradio_api/file={planted}", timeout=30)
        assert info.value.code == 403
    finally:
        demo.close()
        planted.unlink()
