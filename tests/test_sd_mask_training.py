"""choi-sd stage-1 training (`choi train mask --family sd`) on tiny random SD parts (tests/sd_components.py).

The tiny mask preset with the SD encoders runs the same code as the ``sd`` preset, at 32 px.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from choi.cli import main
from choi.errors import ChoiError
from choi.models.mask_generator import MASK_PRESETS, MaskConditions, MaskGenerator
from choi.models.text_encoder import SD_TEXT_ENCODER, CLIPTextEncoder, text_encoder_for
from choi.pipelines.choi import CHOIPipeline
from choi.pipelines.tiny.mask import MaskPipeline
from choi.training.loop import TrainConfig, train
from choi.training.sd import SDImageTask, SDImageTrainConfig
from choi.training.sd import write_model_index as sd_image_index
from choi.training.sd_mask import SDMaskTask, SDMaskTrainConfig, write_model_index
from sd_components import CROSS_DIM, FAST, IMAGE_EMBED_DIM, killed_after

WEIGHTS = "diffusion_pytorch_model.safetensors"
EXAMPLES = Path(__file__).parents[1] / "examples"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def parts(sd_train_parts):
    return sd_train_parts


def _task(parts, model=None, **options) -> SDMaskTask:
    folder = str(model or parts["inpaint"])
    cfg = SDMaskTrainConfig(data=str(parts["data"]), model="tiny", sd_model=folder, sample_size=32, batch_size=2,
                            num_workers=0, val_samples=1, val_steps=2, **options)  # fmt: skip
    return SDMaskTask(cfg)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / WEIGHTS))


def test_the_sd_preset_is_a_128_px_mask_unet_of_about_100_m_parameters():
    config = MaskGenerator.preset_config("sd")
    assert config["sample_size"] == 128 and config["text_encoder"] == SD_TEXT_ENCODER and config["text_dim"] == 768
    with torch.device("meta"):  # no memory, no init time
        model = MaskGenerator(**config)
    assert sum(p.numel() for p in model.parameters()) == 107_870_536
    assert "image_dim" not in MASK_PRESETS["tiny"] and not MaskGenerator.from_preset("tiny").config.image_dim


def test_the_clip_text_encoder_gives_the_base_encoder_s_tokens(parts):
    from transformers import CLIPTextModel, CLIPTokenizer

    encoder = text_encoder_for({"text_encoder": SD_TEXT_ENCODER, "max_text_tokens": 8, "text_dim": CROSS_DIM},
                               parts["base_inpaint"])  # fmt: skip
    assert isinstance(encoder, CLIPTextEncoder)
    out = encoder(["riding a bicycle", "kick ball"])
    assert out.tokens.shape == (2, 8, CROSS_DIM) and out.pooled.shape == (2, CROSS_DIM)
    # what SD itself computes, padded to 77: CLIP is causal, so the real tokens are the same
    tok = CLIPTokenizer.from_pretrained(parts["base_inpaint"], subfolder="tokenizer")
    model = CLIPTextModel.from_pretrained(parts["base_inpaint"], subfolder="text_encoder")
    ids = tok(["riding a bicycle"], padding="max_length", max_length=77, return_tensors="pt")
    with torch.no_grad():
        full = model(ids.input_ids)
    n = int(out.mask[0].sum())
    torch.testing.assert_close(out.tokens[0, :n], full.last_hidden_state[0, :n])
    torch.testing.assert_close(out.pooled[0], full.pooler_output[0])
    with pytest.raises(ChoiError, match="load it through a choi-sd model folder"):
        text_encoder_for({"text_encoder": SD_TEXT_ENCODER, "max_text_tokens": 8, "text_dim": CROSS_DIM})
    with pytest.raises(ChoiError, match="takes 768-wide text tokens; the CLIP text encoder of inpaint gives 32"):
        text_encoder_for(
            {"text_encoder": SD_TEXT_ENCODER, "max_text_tokens": 8, "text_dim": 768}, parts["base_inpaint"]
        )


def test_the_cli_trains_stage1_and_its_run_is_a_choi_sd_folder_that_uses_it(parts, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "mask", "--family", "sd", "--model", str(parts["inpaint"]), "--data", str(parts["data"]),
            "--out", str(out), "--config", "tiny", "--resolution", "32", "--steps", "2", "--batch-size", "2",
            "--workers", "0"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["lr"] == 1e-4 and config["task"]["text_encoder"] == SD_TEXT_ENCODER
    index = json.loads((out / "model" / "model_index.json").read_text())
    source = json.loads((parts["inpaint"] / "model_index.json").read_text())
    assert index["family"] == "choi-sd" and index["components"] == {**source["components"], "stage1": "."}
    saved = MaskGenerator.load_config(out / "model")
    assert saved["text_dim"] == CROSS_DIM and saved["image_dim"] == IMAGE_EMBED_DIM and saved["sample_size"] == 32

    pipe = CHOIPipeline.from_pretrained(out / "model")
    masks: MaskPipeline = pipe.mask_stage.masks.masks
    trained = _weights(out / "model")
    for key, value in masks.model.state_dict().items():
        torch.testing.assert_close(value, trained[key], rtol=0, atol=0, msg=key)
    assert masks.text_encoder.name == SD_TEXT_ENCODER
    assert masks.reference_encoder.model is pipe.image_stage.pipe.image_encoder  # stage 2's, not a second copy

    person = np.asarray(Image.open(EXAMPLES / "kick_ball_human.png").convert("RGB"))
    request = dict(human=EXAMPLES / "kick_ball_human.png", object=EXAMPLES / "ride_bicycle_object.png", seed=0,
                   num_inference_steps=2, guidance_scale=1.0)  # fmt: skip
    ride = masks(interaction="riding a bicycle", **request)
    kick = masks(interaction="kick ball", **request)
    assert ride.soft.shape == (1, 2, 32, 32) and not np.allclose(ride.soft, kick.soft)  # the text changes the masks
    other = masks(interaction="riding a bicycle", reference_images=(255 - person, None), **request)
    assert not np.allclose(ride.soft, other.soft)  # so does the person's identity

    images = tmp_path / "images"
    code = main(["generate", "--model", str(out / "model"), "--human", str(EXAMPLES / "kick_ball_human.png"),
                 "--object", str(EXAMPLES / "ride_bicycle_object.png"), "--interaction", "riding a bicycle",
                 "--seed", "0", "--steps", "2", "--mask-steps", "2", "--set", "layout_candidates=1",
                 "--out", str(images)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    record = json.loads((images / "choi.json").read_text())
    assert record["stage1"]["model"]["id"].endswith("/stage1") and (images / "image_0.png").is_file()


def test_a_killed_run_resumes_to_the_same_weights(parts, tmp_path):
    straight = train(_task(parts), FAST, tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        train(killed_after(SDMaskTask)(_task(parts).cfg), FAST, tmp_path / "b")
    resumed = train(_task(parts), FAST, tmp_path / "b", resume=True)
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys() and any(k.startswith("identity.") for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_a_second_run_starts_from_the_first_and_a_choi_tiny_stage1_from_scratch(parts, tmp_path):
    task = _task(parts)
    assert task.start is None  # `choi model sd` folders name choi-tiny's MiniLM stage 1
    first = train(task, FAST, tmp_path / "first")
    write_model_index(first, task)
    second = _task(parts, model=first)
    assert second.start == first
    start = second.build_model().state_dict()
    for key, value in _weights(first).items():
        torch.testing.assert_close(start[key], value, rtol=0, atol=0, msg=key)
    with pytest.raises(ChoiError, match="is not a 'small' mask model"):
        SDMaskTask(SDMaskTrainConfig(data=str(parts["data"]), model="small", sd_model=str(first))).build_model()
    # stage 2 trained from the stage-1 run keeps the trained stage 1 in its own RUN/model
    image_task = SDImageTask(SDImageTrainConfig(data=str(parts["data"]), model=str(first), resolution=32))
    (tmp_path / "image").mkdir()
    index = json.loads((sd_image_index(tmp_path / "image", image_task) / "model_index.json").read_text())
    assert index["components"]["stage1"] == str(first.resolve()) and index["components"]["adapter"] == "."


@pytest.mark.parametrize("dropped", [False, True])
def test_every_parameter_gets_a_gradient_whatever_is_dropped(parts, dropped):
    p = 1.0 if dropped else 0.0
    task = _task(parts, p_drop_text=p, p_drop_refs=p, p_drop_box=p, p_drop_background=p, p_drop_identity=p)
    torch.manual_seed(0)
    model = task.build_model()
    loss, _ = task.loss(model, next(iter(task.batches(0))))
    loss.backward()
    missing = [name for name, param in model.named_parameters() if param.grad is None]
    assert not missing, missing[:5]


def test_a_model_with_identity_tokens_needs_the_embeddings():
    model = MaskGenerator.from_preset("tiny", image_dim=8, image_tokens=2)
    text = text_encoder_for(model.config)(["kick ball"])
    cond = MaskConditions.build(text, torch.ones(1, 2, 16, 16))
    with pytest.raises(ChoiError, match="give ref_embeds"):
        model.encode_conditions(cond)
    cond.ref_embeds = torch.randn(1, 2, 8)
    enc = model.encode_conditions(cond)
    assert enc.context.shape[1] == 16 + 2 * 16 + 2 * 2  # text, silhouette tokens, identity tokens


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--model": None}, "--family sd needs --model"),
        ({"--model": "data"}, "expected a choi-sd model folder"),
        ({"--resolution": "30"}, "--resolution must be a multiple of the patch size 4"),
        ({"--zoom": "0.5"}, "--zoom: not available with --family sd"),
        ({"--family": "tiny"}, "--model, --resolution: only with --family sd"),
    ],
)
def test_the_cli_refuses_wrong_options_in_one_line(parts, tmp_path, capsys, change, message):
    args = {"--family": "sd", "--model": str(parts["inpaint"]), "--data": str(parts["data"]),
            "--out": str(tmp_path / "r"), "--config": "tiny", "--resolution": "32"}  # fmt: skip
    args.update({k: str(parts.get(v, v)) if v else v for k, v in change.items()})
    code = main(["train", "mask", *[x for k, v in args.items() if v is not None for x in (k, v)]])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("choi: error: ") and err.count("\n") == 1, err
    assert message in err


@pytest.mark.usefixtures("fresh_accelerate_state")
def test_bf16_gradient_checkpointing_and_accumulation_run(parts, tmp_path):
    task = _task(parts)
    cfg = TrainConfig(**{**FAST.__dict__, "steps": 2, "mixed_precision": "bf16", "gradient_checkpointing": True,
                         "grad_accum": 2})  # fmt: skip
    final = train(task, cfg, tmp_path / "run")
    lines = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [line["loss"] for line in lines if "loss" in line]
    assert losses and all(np.isfinite(losses))
    assert task.text_encoder.model.dtype == task.reference_encoder.model.dtype == torch.bfloat16
    assert all(v.dtype == torch.float32 for v in _weights(final).values())  # the mask model stays fp32


def test_a_trained_stage1_reads_clip_when_stage2_was_trained_on_dinov2(parts, tmp_path, capsys):
    task = _task(parts)
    stage1 = write_model_index(train(task, FAST, tmp_path / "mask"), task)
    run = tmp_path / "image"
    code = main(["train", "image", "--family", "sd", "--model", str(stage1), "--data", str(parts["data"]),
                 "--out", str(run), "--resolution", "32", "--steps", "1", "--batch-size", "2", "--workers", "0",
                 "--identity-encoder", str(parts["dino"]), "--validate-samples", "0"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    pipe = CHOIPipeline.from_pretrained(run / "model")
    masks: MaskPipeline = pipe.mask_stage.masks.masks
    assert type(pipe.image_stage.pipe.image_encoder).__name__ == "Dinov2Model"
    assert type(masks.reference_encoder.model).__name__ == "CLIPVisionModelWithProjection"  # its own, not DINOv2
    out = pipe(
        human=EXAMPLES / "kick_ball_human.png",
        object=EXAMPLES / "ride_bicycle_object.png",
        interaction="riding a bicycle",
        seed=0,
        steps=2,
        mask_steps=2,
        options={"layout_candidates": 1},
    )
    assert out.images[0].shape == (32, 32, 3) and out.metadata["stage2"]["model"]["identity_encoder"] == "dinov2"
