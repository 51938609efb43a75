"""Behaviour of the shipped choi-tiny weights (trained, not random): what users get, identities in their roles."""

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from choi.pipelines.choi import CHOIPipeline
from choi.world import render_sample

pytestmark = pytest.mark.usefixtures("one_thread")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def pipe():
    return CHOIPipeline.from_pretrained("choi-tiny")


@pytest.fixture(scope="module")
def scene():
    """A HOI-World test layout (riding a bicycle), another person and another bicycle (unseen identities)."""
    return render_sample("test", 13, seed=0), render_sample("test", 5, seed=0), render_sample("test", 31, seed=0)


def _change(pipe, scene, swap: str) -> tuple[float, float]:
    """Mean absolute change inside the human mask and inside the object mask when one reference changes."""
    target, other_human, other_object = scene
    refs = {"human": target.human_ref, "object": target.object_ref}
    layout = (target.human_mask, target.object_mask)
    request = dict(interaction=target.text, mask=layout, background=target.background, seed=0)
    before = pipe(**refs, **request).images[0].astype(np.float32)
    refs[swap] = other_human.human_ref if swap == "human" else other_object.object_ref
    after = pipe(**refs, **request).images[0].astype(np.float32)
    diff = np.abs(after - before).mean(-1)
    only_human, only_object = layout[0] & ~layout[1], layout[1] & ~layout[0]
    return float(diff[only_human].mean()), float(diff[only_object].mean())


def test_changing_the_human_reference_changes_the_human_region_more(pipe, scene):
    human, obj = _change(pipe, scene, "human")
    assert human > 10 and human > 3 * obj, (human, obj)


def test_changing_the_object_reference_changes_the_object_region_more(pipe, scene):
    human, obj = _change(pipe, scene, "object")
    assert obj > 10 and obj > 3 * human, (human, obj)


def test_the_demo_request_gives_the_expected_image(pipe):
    """Expected output, diffusers-style: the demo's first request (examples/jobs.jsonl), seed 0, end to end.

    The numbers are what choi-tiny drew before the pipeline redesign (bit-identical after it), so a
    refactor that changes what users get fails here; a deliberate change updates them and says why,
    measured with `choi eval`.
    """
    out = pipe(
        human=EXAMPLES / "ride_bicycle_human.png",
        object=EXAMPLES / "ride_bicycle_object.png",
        interaction="a person riding a bicycle",
        background=EXAMPLES / "ride_bicycle_background.png",
        box="0.180,0.203,0.859,0.883",
        seed=0,
    )
    image, human, obj = out.images[0], out.human_masks[0], out.object_masks[0]
    assert image.shape == (128, 128, 3) and human.shape == obj.shape == (128, 128)
    assert abs(int(human.sum()) - 1268) <= 13 and abs(int(obj.sum()) - 1542) <= 15  # pixels, within 1%
    person = [[97, 70, 45], [96, 69, 43], [97, 73, 46], [103, 75, 48], [100, 74, 44], [100, 76, 46],
              [106, 77, 47], [104, 76, 45], [104, 78, 46]]  # fmt: skip
    bicycle = [[41, 41, 47], [40, 40, 48], [41, 41, 48], [38, 38, 45], [40, 40, 48], [42, 42, 49],
               [39, 40, 48], [39, 39, 47], [40, 44, 51]]  # fmt: skip
    assert human[77:80, 63:66].all() and obj[76:79, 42:45].all()  # 3x3 patches deep inside each mask
    np.testing.assert_allclose(image[77:80, 63:66].reshape(-1, 3), person, atol=3)
    np.testing.assert_allclose(image[76:79, 42:45].reshape(-1, 3), bicycle, atol=3)


def test_loading_the_shipped_weights_prints_nothing(capfd):
    capfd.readouterr()
    CHOIPipeline.from_pretrained("choi-tiny")
    assert capfd.readouterr().err == ""  # the image model's weights are sharded: no "Loading checkpoint shards" bar


def test_a_users_model_folder_keeps_diffusers_notices(tiny_model_dir, tmp_path, caplog):
    from safetensors.torch import load_file, save_file

    from choi.pipelines.tiny.mask import MaskPipeline

    folder = shutil.copytree(tiny_model_dir / "mask", tmp_path / "mask")
    weights = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    save_file({**weights, "stray.weight": torch.zeros(2)}, str(folder / "diffusion_pytorch_model.safetensors"))
    diffusers_log = logging.getLogger("diffusers")  # its own handler, not propagated: listen to it directly
    diffusers_log.addHandler(caplog.handler)
    try:
        MaskPipeline.from_pretrained(folder)
        assert "were not used" in caplog.text and "stray.weight" in caplog.text
        caplog.clear()
        CHOIPipeline.from_pretrained("choi-tiny")
        assert caplog.text == ""
    finally:
        diffusers_log.removeHandler(caplog.handler)
