"""Validation during choi-sd stage-2 training: held-out samples through the real stage 2 (tiny random SD parts)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from choi.cli import main
from choi.data.shards import iter_samples
from choi.pipelines.inputs import mask_preview
from choi.pipelines.sd.stages import reference_image
from choi.training.loop import train
from choi.training.sd_validation import psnr
from sd_components import FAST
from test_sd_training import WEIGHTS, _log, _task

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def parts(sd_train_parts):
    return sd_train_parts


SIDE = 32  # the tiny dataset's samples and the training resolution
METRICS = ("val/psnr_person", "val/psnr_object", "val/mae_in_masks")


def _grid(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _cells(grid: np.ndarray, row: int) -> list[np.ndarray]:
    """Row ``row`` of a validation grid cut into its five columns (rows are separated by 2 grey pixels)."""
    top = row * (SIDE + 2)
    return [grid[top : top + SIDE, c * SIDE : (c + 1) * SIDE] for c in range(5)]


def test_validation_writes_a_grid_of_the_held_out_samples_and_logs_psnr(parts, tmp_path):
    task = _task(parts)
    run = tmp_path / "run"
    train(task, dataclasses.replace(FAST, validate_every=2), run)
    assert sorted(p.name for p in (run / "validation").iterdir()) == ["step_0000002.png", "step_0000004.png"]
    lines = _log(run, METRICS[0])
    assert [line["step"] for line in lines] == [2, 4]
    assert all(math.isfinite(line[k]) for line in lines for k in METRICS)
    # the test split's two samples, one row each: references | layout | generated | ground truth
    samples = list(iter_samples(parts["data"], split="test"))
    grid = _grid(run / "validation" / "step_0000004.png")
    assert grid.shape == (2 * SIDE + 2, 5 * SIDE, 3)
    assert (grid[SIDE : SIDE + 2] == 128).all()
    generated = []
    for row, s in enumerate(samples):
        human, obj, layout, image, truth = _cells(grid, row)
        np.testing.assert_array_equal(truth, s.image)
        np.testing.assert_array_equal(layout, mask_preview(s.human_mask, s.object_mask, s.background))
        cutout = np.asarray(reference_image(s.object_ref, s.object_ref_mask).resize((SIDE, SIDE), Image.BICUBIC))
        np.testing.assert_array_equal(obj, cutout)
        assert not np.array_equal(image, truth) and not np.array_equal(human, obj)
        generated.append(psnr(image, s.image, s.human_mask))
    # the logged metric is the generated column's (the samples are at the output size: nothing was resized)
    assert lines[-1]["val/psnr_person"] == pytest.approx(np.mean(generated), abs=1e-9)
    unet = task.base.unet  # the role projections were lent to the UNet for validation only
    assert unet.encoder_hid_proj is None and unet.config.encoder_hid_dim_type is None


def test_a_run_with_validation_trains_bit_identical_weights(parts, tmp_path):
    plain = train(_task(parts, val_samples=0), FAST, tmp_path / "plain")
    validated = train(_task(parts), dataclasses.replace(FAST, validate_every=1), tmp_path / "validated")
    assert not (tmp_path / "plain" / "validation").exists()
    assert len(list((tmp_path / "validated" / "validation").iterdir())) == FAST.steps
    assert [x["loss"] for x in _log(tmp_path / "plain")] == [x["loss"] for x in _log(tmp_path / "validated")]
    for name in (WEIGHTS, f"../checkpoint/model/{WEIGHTS}"):
        a, b = load_file(str(plain / name)), load_file(str(validated / name))
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_validation_in_bf16_is_deterministic_leaves_the_rng_and_uses_the_current_weights(parts, tmp_path):
    task = _task(parts, kind="plain", val_samples=1)
    torch.manual_seed(0)
    adapter = task.build_model()
    task.place(adapter, torch.device("cpu"), torch.bfloat16)  # as the loop places it under bf16
    adapter.eval()
    rng = torch.get_rng_state()
    with torch.no_grad():
        first = task.validate(adapter, tmp_path / "a", 7)
        again = task.validate(adapter, tmp_path / "b", 7)
        adapter.person_proj.image_embeds.weight.add_(0.5)  # another person embedding: what the UNet attends to
        task.validate(adapter, tmp_path / "c", 7)
    assert torch.equal(rng, torch.get_rng_state())
    assert first == again and all(math.isfinite(v) for v in first.values())
    grids = [_grid(tmp_path / run / "validation" / "step_0000007.png") for run in "abc"]
    assert grids[0].shape == (SIDE, 5 * SIDE, 3)  # one sample
    np.testing.assert_array_equal(grids[0], grids[1])
    assert not np.array_equal(_cells(grids[0], 0)[3], _cells(grids[2], 0)[3])  # generated from the weights as they are
    np.testing.assert_array_equal(_cells(grids[0], 0)[4], _cells(grids[2], 0)[4])
    assert task.base.unet.dtype == torch.bfloat16 and not task.base.unet.training
    assert all(p.dtype == torch.float32 for p in adapter.parameters())


def test_the_cli_validates_choi_sd_runs(parts, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "image", "--family", "sd", "--model", str(parts["inpaint"]), "--data", str(parts["data"]),
            "--out", str(out), "--resolution", "32", "--steps", "2", "--batch-size", "2", "--workers", "0",
            "--validate-every", "1", "--validate-samples", "1", "--validate-steps", "2"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    assert sorted(p.name for p in (out / "validation").iterdir()) == ["step_0000001.png", "step_0000002.png"]
    assert _grid(out / "validation" / "step_0000002.png").shape == (SIDE, 5 * SIDE, 3)
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["validate_every"] == 1
    assert (config["task"]["data"]["val_samples"], config["task"]["data"]["val_steps"]) == (1, 2)
    assert [line["step"] for line in _log(out, METRICS[0])] == [1, 2]
