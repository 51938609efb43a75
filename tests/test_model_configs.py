"""Saved models load as they did: the shipped weights (and configs saved before today's keys
existed) through ``from_pretrained``, with an expected output slice, so a change to the
models' parameter lists that changes what users get fails loudly."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from choi.errors import ChoiError
from choi.models.evaluators import IdentityEmbedder, InteractionRecognizer
from choi.models.image_generator import ImageConditions, ImageGenerator
from choi.models.mask_generator import MaskConditions, MaskGenerator
from choi.models.text_encoder import TextEmbeddings

pytestmark = pytest.mark.usefixtures("one_thread")

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "choi" / "weights"

# Slices of outputs computed with the code before the one-config-per-model change (seeded inputs below).
MASK_96 = [0.45511, 1.73652, 0.48898, 0.57753, 1.22886, 0.40843]
MASK_64 = [0.38339, -0.3572, 0.35021, 0.72347, 1.95698, 0.60685]
IMAGE = [0.6703, 0.86101, -0.74492, 0.19782, -0.66303, -0.3139]
INTERACTION = [2.32549, -1.68979, -0.79329, -1.41879, 1.31159, -2.9771]
MASK_RECOGNIZER = [-0.93359, -1.21521, -0.58568, -0.54811, -0.72839, -0.0547]
IDENTITY = [0.06163, 0.0, 0.0, 0.13851, 0.0187, 0.0]


def _text(n: int, g: torch.Generator) -> TextEmbeddings:
    tokens = torch.randn(n, 16, 384, generator=g)
    mask = torch.arange(16)[None].expand(n, -1) < 6
    return TextEmbeddings(tokens, mask, torch.nn.functional.normalize(torch.randn(n, 384, generator=g), dim=-1))


def _boxes(size: int, *boxes: tuple[float, float, float, float]) -> torch.Tensor:
    """(len(boxes), size, size) {0, 1} masks of normalised boxes."""
    out = torch.zeros(len(boxes), size, size)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        out[i, int(y1 * size) : int(y2 * size), int(x1 * size) : int(x2 * size)] = 1
    return out


def _mask_output(model: MaskGenerator) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    size = model.config.sample_size
    refs = torch.stack([_boxes(64, (0.3, 0.1, 0.6, 0.95)), _boxes(64, (0.1, 0.4, 0.9, 0.7))], 1)  # (1, 2, 64, 64)
    cond = MaskConditions.build(
        _text(1, g), refs, box=torch.tensor([[0.2, 0.1, 0.8, 0.9]]), background=torch.rand(1, 3, 32, 32, generator=g)
    )
    with torch.no_grad():
        return model(torch.randn(1, 2, size, size, generator=g), torch.tensor([600]), cond)


def _image_output(model: ImageGenerator) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    refs = torch.rand(1, 2, 3, 64, 64, generator=g)
    ref_masks = torch.stack([_boxes(64, (0.3, 0.1, 0.6, 0.95)), _boxes(64, (0.1, 0.4, 0.9, 0.7))], 1)
    masks = torch.stack([_boxes(128, (0.4, 0.1, 0.6, 0.9)), _boxes(128, (0.2, 0.6, 0.8, 0.8))], 1)
    region = masks.amax(1, keepdim=True)
    cond = ImageConditions.build(
        _text(1, g),
        refs,
        ref_masks,
        region=region,
        masks=masks,
        box=torch.tensor([[0.2, 0.1, 0.8, 0.9]]),
        background=torch.rand(1, 3, 128, 128, generator=g),
    )
    with torch.no_grad():
        return model(torch.randn(1, 3, 128, 128, generator=g), torch.tensor([600]), cond)


def _slice(x: torch.Tensor) -> list[float]:
    return [round(v, 5) for v in x.flatten()[:: max(1, x.numel() // 6)][:6].tolist()]


def _with_config(tmp_path: Path, kind: str, edit) -> Path:
    """The shipped ``kind`` weights next to an edited copy of their config.json."""
    folder = tmp_path / kind
    folder.mkdir()
    shutil.copy(WEIGHTS / kind / "diffusion_pytorch_model.safetensors", folder)
    config = json.loads((WEIGHTS / kind / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_shipped_mask_model_output_is_unchanged():
    model = MaskGenerator.from_pretrained(WEIGHTS / "mask").eval()
    assert model.config.sample_size == 96 and model.config.zoom
    torch.testing.assert_close(torch.tensor(_slice(_mask_output(model))), torch.tensor(MASK_96), atol=1e-4, rtol=0)


def test_a_64px_mask_config_saved_before_zoom_loads_as_before(tmp_path):
    def old(config):
        config["sample_size"] = 64
        del config["zoom"]

    model = MaskGenerator.from_pretrained(_with_config(tmp_path, "mask", old)).eval()
    assert model.config.sample_size == 64 and not model.config.zoom
    torch.testing.assert_close(torch.tensor(_slice(_mask_output(model))), torch.tensor(MASK_64), atol=1e-4, rtol=0)


def test_shipped_image_model_output_is_unchanged():
    model = ImageGenerator.from_pretrained(WEIGHTS / "image").eval()
    assert model.config.warp_prior and tuple(model.config.warp_turns) == (1, 48)
    torch.testing.assert_close(torch.tensor(_slice(_image_output(model))), torch.tensor(IMAGE), atol=1e-4, rtol=0)


def test_an_image_config_saved_before_the_warp_prior_loads_without_it(tmp_path):
    config = json.loads((WEIGHTS / "image" / "config.json").read_text())
    del config["warp_prior"], config["warp_turns"]
    ImageGenerator.from_config(config).save_pretrained(tmp_path)
    model = ImageGenerator.from_pretrained(tmp_path)
    assert model.config.warp_prior is False and tuple(model.config.warp_turns) == (0, 0)
    assert model.unet.conv_in.in_channels == (3 + 7) * 64  # no warped-reference channels


@pytest.mark.parametrize(
    "kind, cls, channels, expected",
    [
        ("interaction", InteractionRecognizer, 3, INTERACTION),
        ("mask", InteractionRecognizer, 2, MASK_RECOGNIZER),
        ("identity", IdentityEmbedder, 3, IDENTITY),
    ],
)
def test_shipped_evaluators_output_is_unchanged(kind, cls, channels, expected):
    model = cls.from_pretrained(WEIGHTS / "evaluators" / kind).eval()
    x = torch.rand(2, channels, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x)
    out = out["human"] if isinstance(out, dict) else out
    torch.testing.assert_close(torch.tensor(_slice(out)), torch.tensor(expected), atol=1e-4, rtol=0)


@pytest.mark.parametrize("cls", [MaskGenerator, ImageGenerator])
def test_presets_are_overrides_on_the_init_defaults(cls):
    defaults = cls.init_defaults()
    assert cls.preset_config("tiny") == defaults  # __init__ is the one parameter list
    small = cls.preset_config("small")
    assert small.keys() == defaults.keys() and small != defaults
    assert {k for k in small if small[k] != defaults[k]} == set(cls.presets["small"])
    assert cls.preset_config("small", sample_size=96)["sample_size"] == 96
    with pytest.raises(ChoiError, match=f"unknown {cls.preset_kind} model config 'huge'; choose from tiny, small"):
        cls.preset_config("huge")
    with pytest.raises(ChoiError, match="has no parameter sample_sise"):
        cls.from_preset("tiny", sample_sise=96)


def test_from_preset_builds_the_resolved_config():
    model = MaskGenerator.from_preset("tiny", sample_size=96, zoom=True)
    assert model.config.sample_size == 96 and model.config.zoom and model.config.patch_size == 4
