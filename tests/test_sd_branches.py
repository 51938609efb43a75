"""choi-sd stage 2's two switches: --layout inpaint (no ControlNet) and --identity-encoder (DINOv2), tiny parts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from choi.cli import main
from choi.models.sd_adapter import ExtendedConvIn
from choi.training.sd import SDImageTask, SDImageTrainConfig, write_model_index
from sd_components import DINO_DIM, untrained_and_zero_shot
from stage2_contract import layout

WEIGHTS = "diffusion_pytorch_model.safetensors"
EXAMPLES = Path(__file__).parents[1] / "examples"
REQUEST = dict(human=EXAMPLES / "kick_ball_human.png", object=EXAMPLES / "ride_bicycle_object.png",
               interaction="ride bicycle", mask=layout(32, 32), seed=0, steps=2)  # fmt: skip

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def parts(sd_train_parts):
    return sd_train_parts


def _task(parts, kind="inpaint", **options):
    cfg = SDImageTrainConfig(data=str(parts["data"]), model=str(parts[kind]), resolution=32, batch_size=2,
                             num_workers=0, **options)  # fmt: skip
    return SDImageTask(cfg)


def _train(parts, out: Path, *flags: str, kind: str = "inpaint") -> int:
    return main(["train", "image", "--family", "sd", "--model", str(parts[kind]), "--data", str(parts["data"]),
                 "--out", str(out), "--resolution", "32", "--steps", "2", "--batch-size", "2", "--workers", "0",
                 "--lr", "1e-3", "--validate-samples", "1", "--validate-steps", "2", *flags])  # fmt: skip


def _generate(folder: Path, **options):
    from choi.pipelines.choi import CHOIPipeline

    pipe = CHOIPipeline.from_pretrained(folder)
    return pipe, pipe(**{**REQUEST, **options})


def test_the_inpaint_layout_trains_without_a_controlnet_and_generates(parts, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(parts, run, "--layout", "inpaint") == 0, capsys.readouterr().err
    trained = load_file(str(run / "checkpoint" / "model" / WEIGHTS))
    assert not any(k.startswith("controlnet.") for k in trained)
    assert {k.split(".")[0] for k in trained} == {"layout_channels", "person_proj", "object_proj", "ip_layers"}
    assert trained["layout_channels.conv.weight"].shape == (32, 2, 3, 3)  # to conv_in's width, its kernel
    assert float(trained["layout_channels.conv.weight"].abs().max()) > 0  # zero at start: it trained
    assert json.loads((run / "model" / "config.json").read_text())["layout"] == "inpaint"
    assert len(list((run / "validation").glob("step_*.png"))) == 1  # validated at the end, without a ControlNet
    pipe, out = _generate(run / "model")
    stage = pipe.image_stage
    assert type(stage.pipe).__name__ == "StableDiffusionInpaintPipeline"  # no ControlNet at inference either
    assert isinstance(stage.pipe.unet.conv_in, ExtendedConvIn)
    torch.testing.assert_close(stage.pipe.unet.conv_in.layout.conv.weight, load_file(str(run / "model" / WEIGHTS))[
        "layout_channels.conv.weight"], rtol=0, atol=0)  # fmt: skip
    assert out.images[0].shape == (32, 32, 3) and out.metadata["stage2"]["model"]["layout"] == "inpaint"


def test_the_layout_channels_carry_which_mask_is_whose(parts):
    """Both roles start as the same IP-Adapter: with the same reference for both, swapping the person's
    and the object's masks changes nothing until the layout channels, zero at start, have weights."""
    task = _task(parts, layout="inpaint")
    torch.manual_seed(0)
    adapter = task.build_model()
    task.place(adapter, torch.device("cpu"), torch.float32)
    masks = torch.stack([torch.from_numpy(m).float() for m in layout(32, 32)])[None]  # (1, 2, 32, 32)
    sample, t, inpaint = torch.randn(1, 4, 16, 16), torch.tensor([500]), torch.randn(1, 5, 16, 16)
    text = task.base.text_encoder(task.empty_ids)[0]
    embeds = torch.randn(1, 1, task.base.embed_dim).repeat(1, 2, 1)  # one reference for both roles

    def swap_change() -> float:
        with torch.no_grad():
            a, b = (adapter(sample, t, text, embeds, None, m, inpaint) for m in (masks, masks.flip(1)))
        return float((a - b).abs().max())

    assert swap_change() < 1e-5
    torch.nn.init.normal_(adapter.layout_channels.conv.weight, std=0.1)
    assert swap_change() > 1e-3


def test_an_untrained_inpaint_adapter_generates_what_zero_shot_choi_sd_does(parts, tmp_path):
    task = _task(parts, layout="inpaint")
    untrained_and_zero_shot(task, parts["inpaint"], tmp_path)
    images = [_generate(tmp_path / name, guidance=1.0)[1].images[0] for name in ("zero-shot", "run-model")]
    assert abs(images[0].astype(int) - images[1].astype(int)).max() <= 1


def test_dinov2_is_frozen_and_feeds_trainable_projections(parts):
    task = _task(parts, kind="plain", identity_encoder=str(parts["dino"]), p_drop_human=0.0, p_drop_object=0.0)
    torch.manual_seed(0)
    model = task.build_model()
    ip = load_file(str(parts["ip"]))
    assert model.person_proj.image_embeds.weight.shape == (ip["image_proj.proj.weight"].shape[0], DINO_DIM)
    torch.testing.assert_close(model.ip_layers[0].to_k_ip[1].weight, ip["ip_adapter.1.to_k_ip.weight"], rtol=0,
                               atol=0)  # fmt: skip
    task.place(model, torch.device("cpu"), torch.float32)
    dino = task.base.image_encoder
    assert type(dino).__name__ == "Dinov2Model" and not any(p.requires_grad for p in dino.parameters())
    loss, _ = task.loss(model, next(iter(task.batches(0))))
    loss.backward()
    assert all(p.grad is None for p in dino.parameters())
    for proj in (model.person_proj, model.object_proj):
        assert float(proj.image_embeds.weight.grad.abs().max()) > 0
    assert not any(k.startswith(("image_encoder", "dino")) for k in model.state_dict())


def test_a_dinov2_run_generates_with_dinov2(parts, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(parts, run, "--identity-encoder", str(parts["dino"]), kind="plain") == 0, capsys.readouterr().err
    index = json.loads((run / "model" / "model_index.json").read_text())
    assert index["components"]["identity_encoder"] == str(parts["dino"].resolve())
    assert json.loads((run / "model" / "config.json").read_text())["identity_encoder"] == "dinov2"
    assert len(list((run / "validation").glob("step_*.png"))) == 1  # validated at the end, through DINOv2
    assert json.loads((run / "config.json").read_text())["task"]["identity_encoder"] == "dinov2"
    pipe, out = _generate(run / "model", guidance=3.0)
    stage = pipe.image_stage
    assert type(stage.pipe.image_encoder).__name__ == "Dinov2Model"
    assert type(stage.pipe).__name__ == "StableDiffusionControlNetInpaintPipeline"  # the default layout
    assert out.metadata["stage2"]["model"]["identity_encoder"] == "dinov2"
    # the person's reference reaches the image through DINOv2
    other = pipe(**{**REQUEST, "guidance": 3.0, "human": EXAMPLES / "ride_bicycle_human.png"})
    assert (out.images[0] != other.images[0]).any()


@pytest.mark.parametrize(
    "flags, kind, message",
    [
        (["--layout", "inpaint"], "plain", "--layout inpaint needs an inpainting base (9-channel UNet)"),
        (["--layout", "adapter"], "inpaint", "--layout must be one of controlnet, inpaint"),
        (["--identity-encoder", "IP"], "inpaint", "--identity-encoder: "),
    ],
)
def test_bad_combinations_are_refused_in_one_line(parts, tmp_path, capsys, flags, kind, message):
    flags = [str(parts["ip"].parent / "image_encoder") if f == "IP" else f for f in flags]  # a CLIP folder
    assert _train(parts, tmp_path / "r", *flags, kind=kind) == 2
    err = capsys.readouterr().err
    assert err.startswith("choi: error: ") and err.count("\n") == 1 and message in err, err


def test_going_on_from_a_run_keeps_its_switches(parts, tmp_path):
    from choi.errors import ChoiError

    task = _task(parts, layout="inpaint", identity_encoder=str(parts["dino"]))  # both switches at once
    task.build_model().save_pretrained(tmp_path / "first")
    write_model_index(tmp_path / "first", task)
    go_on = SDImageTrainConfig(data=str(parts["data"]), model=str(tmp_path / "first"), resolution=32, num_workers=0)
    with pytest.raises(ChoiError, match="--layout controlnet: the adapter .* was trained with --layout inpaint"):
        SDImageTask(go_on).build_model()
    again = SDImageTask(SDImageTrainConfig(**{**go_on.__dict__, "layout": "inpaint"}))
    assert again.base.identity_encoder == "dinov2" and again.base.identity_path == parts["dino"].resolve()
    adapter = again.build_model()  # the DINOv2 folder comes from the run's model_index.json
    assert (adapter.config.layout, adapter.config.identity_encoder) == ("inpaint", "dinov2")
