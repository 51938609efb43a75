"""choi-sd on tiny random Stable Diffusion parts written in the public formats (tests/sd_components.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from choi.cli import main
from choi.errors import ChoiError
from choi.pipelines.choi import CHOIPipeline
from choi.pipelines.sd import make_model_folder
from sd_components import write_ip_adapter, write_sd_folder
from stage2_contract import check_stage2_contract, layout

EXAMPLES = Path(__file__).parents[1] / "examples"
HUMAN, OBJECT = EXAMPLES / "kick_ball_human.png", EXAMPLES / "ride_bicycle_object.png"
OPTIONS = {"mask_grow": 2, "layout_candidates": 1}  # the test models' defaults: tiny frames, one layout
FAST = {"steps": 2}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd-parts")
    return {"inpaint": write_sd_folder(root / "sd-inpaint"), "plain": write_sd_folder(root / "sd", inpainting=False),
            "ip": write_ip_adapter(root / "IP-Adapter")}  # fmt: skip


def _model(parts, out: Path, base: str) -> Path:
    folder = make_model_folder(out, base=parts[base], ip_adapter=parts["ip"], resolution=64)
    index = json.loads((folder / "model_index.json").read_text())
    index["options"] = OPTIONS
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


@pytest.fixture(scope="module")
def pipes(parts, tmp_path_factory):
    return {base: CHOIPipeline.from_pretrained(_model(parts, tmp_path_factory.mktemp("model"), base))
            for base in ("inpaint", "plain")}  # fmt: skip


@pytest.fixture(params=["inpaint", "plain"])
def sd_pipe(request, pipes):
    """Each base: SD 1.x inpainting (9-channel UNet) and plain (4-channel: blended inpainting)."""
    return pipes[request.param]


@pytest.fixture
def inpaint_pipe(pipes):
    return pipes["inpaint"]


def _one_line_error(capsys, code: int) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("choi: error: ") and err.count("\n") == 1, err
    return err


def test_model_sd_writes_an_index_that_refers_to_the_folders(parts, tmp_path):
    out = tmp_path / "model"
    assert main(["model", "sd", "--base", str(parts["inpaint"]), "--ip-adapter", str(parts["ip"]),
                 "--resolution", "64", "--out", str(out)]) == 0  # fmt: skip
    index = json.loads((out / "model_index.json").read_text())
    assert index["family"] == "choi-sd" and index["resolution"] == 64
    parts_ = index["components"]
    assert parts_["base"] == str(parts["inpaint"].resolve()) and Path(parts_["ip_adapter"]).is_absolute()
    assert parts_["image_encoder"] == str(parts["ip"].parent.resolve() / "image_encoder")  # beside the weights
    assert parts_["stage1"] == "choi-tiny"
    assert sorted(p.name for p in out.iterdir()) == ["model_index.json"]  # refers, never copies


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--base": "ip_folder"}, "--base: no unet/ found: expected a diffusers Stable Diffusion folder"),
        ({"--base": "checkpoint"}, "convert_original_stable_diffusion_to_diffusers.py"),
        ({"--ip-adapter": "unet_weights"}, "--ip-adapter: diffusion_pytorch_model.safetensors has no image_proj"),
        ({"--image-encoder": "base"}, "--image-encoder: no CLIP image encoder"),
        ({"--stage1": "base"}, "--stage1: no mask model"),
        ({"--resolution": "66"}, "--resolution must be a multiple of 4"),
    ],
)
def test_model_sd_refuses_a_wrong_folder_in_one_line(parts, tmp_path, capsys, change, message):
    checkpoint = tmp_path / "v1-5-pruned.safetensors"
    checkpoint.write_bytes(b"")
    paths = {"ip_folder": parts["ip"].parent, "checkpoint": checkpoint, "base": parts["inpaint"],
             "unet_weights": parts["inpaint"] / "unet" / "diffusion_pytorch_model.safetensors"}  # fmt: skip
    args = {"--base": str(parts["inpaint"]), "--ip-adapter": str(parts["ip"]), "--out": str(tmp_path / "m")}
    args.update({k: str(paths.get(v, v)) for k, v in change.items()})
    err = _one_line_error(capsys, main(["model", "sd", *[x for kv in args.items() for x in kv]]))
    assert message in err
    assert not (tmp_path / "m").exists()


def test_choi_sd_passes_the_stage2_contract(sd_pipe, tmp_path):
    check_stage2_contract(_Fast(sd_pipe), HUMAN, OBJECT, "ride bicycle", tmp_path / "out", grow=OPTIONS["mask_grow"])


class _Fast:
    """The pipeline with 2 denoising steps by default: the contract does not pass ``steps``."""

    def __init__(self, pipe):
        self.pipe, self.image_stage = pipe, pipe.image_stage

    def __call__(self, **request):
        return self.pipe(**{**FAST, **request})


def test_each_reference_and_the_interaction_change_the_image(sd_pipe):
    hm, om = layout(64, 64)
    request = dict(human=HUMAN, object=OBJECT, interaction="ride bicycle", mask=(hm, om), seed=0, **FAST)
    base = sd_pipe(**request).images[0]
    for change in ({"interaction": "carry umbrella"}, {"human": EXAMPLES / "fly_kite_human.png"},
                   {"object": EXAMPLES / "kick_ball_object.png"}):  # fmt: skip
        other = sd_pipe(**{**request, **change}).images[0]
        assert not np.array_equal(base, other), change


def test_a_small_region_of_a_big_background_is_painted_in_a_window_around_it(inpaint_pipe):
    background = np.random.default_rng(1).integers(0, 256, (160, 240, 3), dtype=np.uint8)
    hm, om = np.zeros((160, 240), bool), np.zeros((160, 240), bool)
    hm[100:140, 30:45], om[120:140, 45:60] = True, True
    request = dict(human=HUMAN, object=OBJECT, interaction="ride bicycle", background=background, mask=(hm, om), seed=0)
    out = inpaint_pipe(**request, **FAST)
    window = out.metadata["stage2"]["windows"][0]
    # the grown region (44 x 34 px) doubled: 88 x 88, centred, moved up 4 px to stay inside the frame
    assert window == {"box": [72, 1, 160, 89], "working_size": [64, 64]}
    outside = ~binary_dilation(hm | om, iterations=OPTIONS["mask_grow"])
    np.testing.assert_array_equal(out.images[0][outside], background[outside])
    whole = inpaint_pipe(**request, options={"crop_context": "none"}, **FAST).metadata["stage2"]["windows"][0]
    assert whole == {"box": [0, 0, 160, 240], "working_size": [44, 64]}  # the background's aspect, long side 64


def test_stage1_draws_masks_at_the_output_size(inpaint_pipe):
    out = inpaint_pipe.generate_masks(human=HUMAN, object=OBJECT, interaction="ride bicycle", seed=0, num_images=2)
    assert out.human_masks.shape == (2, 64, 64) and out.object_masks.any()
    assert out.metadata["family"] == "choi-sd"


def test_options_are_checked_in_one_line(inpaint_pipe):
    for bad, message in (({"prompt": "a person"}, "{interaction}"), ({"scheduler": "lms"}, "dpm++"),
                         ({"ip_scale_human": -1}, "ip_scale_human"), ({"guidance": 1}, "no option")):  # fmt: skip
        with pytest.raises(ChoiError, match=message.replace("+", r"\+")):
            inpaint_pipe(human=HUMAN, object=OBJECT, interaction="ride bicycle", options=bad, seed=0, **FAST)


def test_generate_through_the_cli_writes_every_output(parts, tmp_path, capsys):
    model = _model(parts, tmp_path / "model", "inpaint")
    out = tmp_path / "out"
    code = main(["generate", "--model", str(model), "--human", str(HUMAN), "--object", str(OBJECT),
                 "--interaction", "riding a bicycle", "--seed", "5", "--steps", "2", "--num-images", "2",
                 "--set", "prompt=a person {interaction}, photo", "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    names = {p.name for p in out.iterdir()}
    for k in (0, 1):
        assert {f"image_{k}.png", f"mask_{k}_human.png", f"mask_{k}_object.png", f"mask_{k}_preview.png"} <= names
    assert {"reference_human.png", "reference_object.png", "choi.json"} <= names
    record = json.loads((out / "choi.json").read_text())
    assert record["family"] == "choi-sd" and record["seeds"] == [5, 6]
    assert record["stage2"]["prompt"] == "a person riding a bicycle, photo" and record["stage2"]["steps"] == 2
    assert record["stage2"]["model"]["base"] == str(parts["inpaint"].resolve())
    assert record["options"]["mask_grow"] == OPTIONS["mask_grow"]


def test_offload_on_the_cpu_is_one_line(parts, tmp_path, capsys):
    code = main(["generate", "--model", str(tmp_path), "--human", str(HUMAN), "--object", str(OBJECT),
                 "--interaction", "ride bicycle", "--offload", "--out", str(tmp_path / "o")])  # fmt: skip
    assert "--offload" in _one_line_error(capsys, code)


def test_the_app_runs_choi_sd(inpaint_pipe, tmp_path):
    pytest.importorskip("gradio")
    from choi.app import Handlers

    class Progress:
        def __call__(self, value, desc=None, unit=None):
            pass

    app = Handlers(inpaint_pipe, tmp_path / "outputs")
    form = [str(HUMAN), str(OBJECT), "ride bicycle", None, None, None, None, None]
    _, editor, _, references = app.generate_masks(*form, 1, 0, 0, -1, 0, -1, "", progress=Progress())
    gallery, downloads, _ = app.generate_images(*form, editor, 1, 0, 0, -1, 2, -1, "mask_grow=1", progress=Progress())
    assert [caption for _, caption in gallery] == ["seed 0"] and any(d.endswith("choi.json") for d in downloads)
    assert [caption for _, caption in references] == ["human: plain-background", "object: plain-background"]
