"""Stage 2 and the end-to-end pipeline: image model, renderer, CHOIPipeline, training recipe, baselines."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from choi.cli import main
from choi.errors import ChoiError
from choi.models.conditioning import (
    generation_region,
    layout_region,
    snap_silhouettes,
    turns_and_mirrors,
    warp_into_masks,
)
from choi.models.image_generator import IMAGE_PRESETS, ImageConditions, ImageGenerator
from choi.models.mask_generator import MaskGenerator
from choi.models.text_encoder import TextEncoder
from choi.pipelines.choi import CHOIPipeline
from choi.pipelines.inputs import mask_preview, read_layout_mask, read_reference
from choi.pipelines.tiny.mask import DEFAULT_GUIDANCE as MASK_GUIDANCE
from choi.pipelines.tiny.mask import MaskPipeline
from choi.pipelines.tiny.render import ImageRenderer
from choi.pipelines.tiny.stages import (
    OBJECT_FIT_TURNS,
    TinyImageStage,
    TinyMaskStage,
    TinyOptions,
    fit_object_masks,
    snap_objects,
)
from choi.training.image import ImageTask, ImageTrainConfig
from choi.training.loop import TrainConfig, train
from choi.world import render_sample
from fake_samples import write_tiny_dataset
from tiny_choi import IMAGE as TINY  # the tiny image model the other tests use too

STEPS = 3


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def text_encoder():
    return TextEncoder()


@pytest.fixture(scope="module")
def image_model():
    torch.manual_seed(0)
    return ImageGenerator(**TINY).eval()


@pytest.fixture(scope="module")
def renderer(image_model, text_encoder):
    return ImageRenderer(image_model, text_encoder)


@pytest.fixture(scope="module")
def sample():
    return render_sample("test", 3, seed=0, resolution=64)


def _render(renderer, sample, seeds=(0,), **kw):
    """The renderer on the sample's references (segmented as the pipeline does), one generator per seed."""
    human, human_sil = read_reference(sample.human_ref, None, "human")
    obj, object_sil = read_reference(sample.object_ref, None, "object")
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    args = dict(layout_masks=(sample.human_mask[None], sample.object_mask[None]), num_inference_steps=STEPS)
    return renderer(human, human_sil, obj, object_sil, sample.text, generators, **{**args, **kw})


# --- model ------------------------------------------------------------------------------------


def test_model_predicts_rgb_and_round_trips(image_model, text_encoder, tmp_path):
    n = 2
    cond = ImageConditions.build(
        text_encoder(["kick ball", "ride bicycle"]),
        torch.rand(n, 2, 3, 40, 40),
        (torch.rand(n, 2, 40, 40) > 0.5).float(),
        region=generation_region(torch.tensor([[0.1, 0.1, 0.6, 0.9]] * n), 32),
        masks=torch.rand(n, 2, 32, 32),
        background=torch.rand(n, 3, 32, 32),
    )
    x, t = torch.randn(n, 3, 32, 32), torch.tensor([10, 900])
    with torch.no_grad():
        out = image_model(x, t, cond)
        assert out.shape == (n, 3, 32, 32)
        image_model.save_pretrained(tmp_path / "m")
        again = ImageGenerator.from_pretrained(tmp_path / "m").eval()
        torch.testing.assert_close(again(x, t, cond), out)
        # Every condition reaches the output.
        for name in ("text", "human", "object", "masks", "background"):
            assert not torch.allclose(image_model(x, t, cond.dropped(**{name: True})), out), name
    assert set(IMAGE_PRESETS) >= {"tiny", "small"}
    with pytest.raises(ChoiError, match="unknown image model config"):
        ImageGenerator.from_preset("huge")
    with pytest.raises(ValueError, match="unknown conditions"):
        cond.dropped(colour=True)


def test_load_compatible_grows_an_older_model_into_the_warp_prior(image_model, text_encoder):
    torch.manual_seed(2)
    old = ImageGenerator(**{**TINY, "warp_prior": False}).eval()
    new = ImageGenerator(**TINY).eval()
    assert new.load_compatible(old) == ["unet.conv_out.weight", "unet.conv_out.bias"]
    shared = old.unet.conv_in.weight.shape[1]
    assert torch.equal(new.unet.conv_in.weight[:, :shared], old.unet.conv_in.weight)
    assert not new.unet.conv_in.weight[:, shared:].any()
    assert torch.equal(new.refs.role, old.refs.role)
    # The zeroed correction leaves exactly the first guess: background outside, references inside.
    cond = ImageConditions.build(
        text_encoder(["kick ball"]),
        torch.rand(1, 2, 3, 40, 40),
        torch.ones(1, 2, 40, 40),
        region=torch.ones(1, 1, 32, 32),
        masks=torch.rand(1, 2, 32, 32) > 0.5,
    )
    with torch.no_grad():
        enc = new.encode_conditions(cond)
        torch.testing.assert_close(new.denoise(torch.randn(1, 3, 32, 32), torch.tensor([500]), enc), enc.skip)
    assert enc.skip.abs().sum() > 0
    # A model of another config keeps its own initialisation where the shapes differ.
    other = ImageGenerator(**{**TINY, "block_out_channels": (32, 64)})
    assert len(other.load_compatible(new)) > 2
    with pytest.raises(ChoiError, match="prediction_type"):
        ImageGenerator(**{**TINY, "prediction_type": "v_prediction"})
    with pytest.raises(ChoiError, match="warp_turns"):
        ImageGenerator(**{**TINY, "warp_turns": (4,)})


def test_warp_puts_each_reference_into_its_own_mask():
    ref = torch.zeros(1, 3, 40, 40)
    ref[:, 0, 5:15, 10:20] = 1  # red top half ...
    ref[:, 2, 15:25, 10:20] = 1  # ... blue bottom half of a 10x20 subject
    sil = torch.zeros(1, 1, 40, 40)
    sil[..., 5:25, 10:20] = 1
    target = torch.zeros(1, 1, 32, 32)
    target[..., 4:28, 16:24] = 1
    out = warp_into_masks(ref, sil, target)[0]
    assert out.shape == (4, 32, 32)
    assert out[0, 5:15, 17:23].min() > 0.9 and out[2, 5:15, 17:23].max() < 0.1  # top is red
    assert out[2, 17:27, 17:23].min() > 0.9 and out[0, 17:27, 17:23].max() < 0.1  # bottom is blue
    assert not out[:, :, :16].any() and not out[:, :4].any()  # nothing outside the target mask
    assert not warp_into_masks(ref, sil, torch.zeros(1, 1, 32, 32)).any()
    for turns in (0, 4):  # an empty silhouette (a failed segmentation) paints nothing, and no NaN
        assert not warp_into_masks(ref, torch.zeros_like(sil), target, turns).any()
    grown = layout_region(torch.stack([target[:, 0], torch.zeros(1, 32, 32)], 1))[0, 0]
    assert grown[4:28, 16:24].all() and grown[4:28, 15].all() and not grown[:, :14].any()  # 1 px at 32 px


def test_region_covers_the_box_with_a_margin():
    region = generation_region(torch.tensor([[0.25, 0.25, 0.75, 0.5]]), 32)[0, 0]
    assert region[8:16, 8:24].all() and region.sum() < 0.5 * 32 * 32
    assert not region[:5].any() and not region[:, :5].any()


# --- renderer ----------------------------------------------------------------------------------


def test_renderer_is_deterministic_per_seed_and_batch_independent(renderer, sample):
    hm, om = np.repeat(sample.human_mask[None], 3, 0), np.repeat(sample.object_mask[None], 3, 0)
    batch = _render(renderer, sample, layout_masks=(hm, om), seeds=[5, 6, 7])
    single = _render(renderer, sample, seeds=[6])
    assert batch[0].shape == (64, 64, 3) and batch[0].dtype == np.uint8
    assert np.abs(batch[1].astype(int) - single[0]).max() <= 1
    assert np.array_equal(_render(renderer, sample, seeds=[6])[0], single[0])
    assert not np.array_equal(batch[0], batch[1])


def test_background_is_kept_outside_the_region(renderer, sample):
    bg = np.asarray(sample.background)
    out = _render(renderer, sample, layout_masks=None, background=bg, box=(0.3, 0.3, 0.7, 0.8))[0]
    region = generation_region(torch.tensor([[0.3, 0.3, 0.7, 0.8]]), 32)
    inside = torch.nn.functional.interpolate(region, size=(64, 64), mode="nearest")[0, 0].numpy() > 0.5
    assert np.array_equal(out[~inside], bg[~inside])
    assert not np.array_equal(out[inside], bg[inside])


def test_background_is_kept_outside_the_masks(renderer, sample):
    bg = np.asarray(sample.background)
    out = _render(renderer, sample, background=bg)[0]
    masks = torch.from_numpy(np.stack([sample.human_mask, sample.object_mask])[None]).float()
    region = layout_region(torch.nn.functional.interpolate(masks, size=(32, 32), mode="area"))
    inside = torch.nn.functional.interpolate(region, size=(64, 64), mode="nearest")[0, 0].numpy() > 0.5
    assert inside.mean() < 0.6 and (sample.human_mask | sample.object_mask)[~inside].sum() == 0
    assert np.array_equal(out[~inside], bg[~inside])


def test_box_only_layout_and_missing_layout(renderer, sample):
    assert _render(renderer, sample, layout_masks=None, box=(0.2, 0.2, 0.8, 0.9))[0].shape == (32, 32, 3)
    with pytest.raises(ChoiError, match="needs a layout"):
        _render(renderer, sample, layout_masks=None)


# --- end-to-end pipeline ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipe(image_model, text_encoder):
    torch.manual_seed(1)
    masks = MaskPipeline(MaskGenerator.from_preset("tiny").eval(), text_encoder)
    renderer = ImageRenderer(image_model, text_encoder)
    return CHOIPipeline(TinyMaskStage(masks), TinyImageStage(renderer), TinyOptions, "choi-tiny")


def _call(pipe, sample, **kw):
    args = dict(
        human=sample.human_ref,
        object=sample.object_ref,
        interaction="a person kicking a ball",
        seed=3,
        steps=STEPS,
        mask_steps=STEPS,
    )
    return pipe(**{**args, **kw})


def _stage1(pipe, size=32, **kw):
    """Stage 1's mask pipeline called directly, as the pipeline calls it: output at the model's size, default CFG."""
    return pipe.mask_stage.masks(**kw, num_inference_steps=STEPS, guidance_scale=MASK_GUIDANCE, height=size, width=size)


def test_pipeline_end_to_end_save_and_metadata(pipe, sample, tmp_path):
    from PIL import Image

    Image.fromarray(sample.human_ref).save(tmp_path / "h.png")
    human = str(tmp_path / "h.png")
    out = _call(pipe, sample, human=human, num_images=2, background=sample.background, box=(0.1, 0.2, 0.9, 0.95))
    assert len(out.images) == 2 and out.images[0].shape == (64, 64, 3)
    assert out.human_masks.shape == (2, 64, 64) and out.metadata["seeds"] == [3, 4]
    assert out.metadata["interaction_class"] == "kick_ball" and out.metadata["stage1"]["source"] == "stage-1"
    assert out.metadata["stage1"]["num_inference_steps"] == STEPS and out.metadata["stage2"]["steps"] == STEPS
    files = out.save(tmp_path / "o")
    assert files[-1].name == "choi.json" and all(f.exists() for f in files)
    record = json.loads(files[-1].read_text())
    assert record["request"]["human"] == human and record["request"]["seed"] == 3
    assert record["images"][1]["image"] == "image_1.png" and record["images"][1]["seed"] == 4
    again = _call(pipe, sample, num_images=1, seed=4, background=sample.background, box=(0.1, 0.2, 0.9, 0.95))
    assert np.abs(again.images[0].astype(int) - out.images[1]).max() <= 1  # image k depends on its seed only


def test_pipeline_renders_in_the_masks_generate_masks_gives(pipe, sample):
    request = dict(human=sample.human_ref, object=sample.object_ref, interaction="kick ball", seed=5)
    fitted = pipe.generate_masks(**request, mask_steps=STEPS)
    raw = pipe.generate_masks(**request, mask_steps=STEPS, options={"fit_object": False})
    one = pipe.generate_masks(**request, mask_steps=STEPS, options={"fit_object": False, "layout_candidates": 1})
    direct = _stage1(pipe, **request)
    assert one.images == [] and one.metadata["stage1"]["layout_candidates"] == 1
    assert np.array_equal(one.object_masks, direct.object_masks) and np.array_equal(one.human_masks, direct.human_masks)
    assert np.array_equal(fitted.human_masks, raw.human_masks)  # the fit does not change which layout is kept
    assert "object_fit_turns" not in raw.metadata["stage1"]
    assert fitted.metadata["stage1"]["object_fit_turns"] == OBJECT_FIT_TURNS == 48
    assert not (fitted.object_masks & fitted.human_masks).any()
    out = _call(pipe, sample, **request, mask_steps=STEPS)
    assert np.array_equal(out.object_masks, fitted.object_masks)
    assert np.array_equal(_call(pipe, sample, **request, options={"fit_object": False}).object_masks, raw.object_masks)


def test_zoom_reaches_stage_one_and_keeps_its_layouts_in_the_window(pipe, sample):
    box = (0.3, 0.25, 0.6, 0.9)
    request = dict(human=sample.human_ref, object=sample.object_ref, interaction="kick ball", seed=5, box=box)
    zoomed = _call(pipe, sample, **request, background=sample.background, options={"zoom": True})
    left, top, right, bottom = zoomed.metadata["stage1"]["zoom_window"]
    outside = np.ones(sample.background.shape[:2], bool)
    outside[top:bottom, left:right] = False
    assert not (zoomed.human_masks[0] | zoomed.object_masks[0])[outside].any()
    masks = pipe.generate_masks(**request, background=sample.background, mask_steps=STEPS, options={"zoom": True})
    assert np.array_equal(masks.human_masks, zoomed.human_masks)
    assert _call(pipe, sample, **request).metadata["stage1"]["zoom_window"] is None  # an untrained model: off


def test_layout_choice_keeps_the_candidate_the_object_reference_fits_best(pipe, sample):
    request = dict(human=sample.human_ref, object=sample.object_ref, interaction="kick ball")
    gens = [torch.Generator().manual_seed(s) for s in (5, 6)]
    drawn = _stage1(pipe, **request, num_images=6, generator=[gens[0]] * 3 + [gens[1]] * 3)
    options = {"layout_candidates": 3, "fit_object": False}
    chosen = pipe.generate_masks(**request, mask_steps=STEPS, seed=5, num_images=2, options=options)
    fitted = snap_objects(drawn.human_masks, drawn.object_masks, read_reference(sample.object_ref, None, "object")[1])
    objects = drawn.object_masks & ~drawn.human_masks
    iou = ((fitted & objects).sum((1, 2)) / np.maximum((fitted | objects).sum((1, 2)), 1)).reshape(2, 3)
    best = iou.argmax(1) + [0, 3]
    assert np.array_equal(chosen.human_masks, drawn.human_masks[best])
    assert np.array_equal(chosen.object_masks, drawn.object_masks[best]) and len(chosen.object_masks) == 2
    meta = chosen.metadata
    assert meta["seeds"] == [5, 6] and meta["num_images"] == 2 and meta["stage1"]["layout_candidates"] == 3
    assert meta["stage1"]["layout_scores"] == pytest.approx(iou.max(1), abs=1e-4)
    alone = pipe.generate_masks(**request, mask_steps=STEPS, seed=6, options=options)
    assert np.array_equal(alone.human_masks[0], chosen.human_masks[1])  # image k depends on its own seed only
    out = _call(pipe, sample, seed=5, num_images=2, interaction="kick ball", options=options)
    assert np.array_equal(out.human_masks, chosen.human_masks) and out.metadata["options"]["layout_candidates"] == 3
    assert out.metadata["stage1"]["layout_scores"] == meta["stage1"]["layout_scores"]
    for bad in (0, 65, 2.5, True, "four"):
        with pytest.raises(ChoiError, match="layout_candidates"):
            _call(pipe, sample, options={"layout_candidates": bad})
    with pytest.raises(ChoiError, match="choi-tiny has no option 'candidates'; its options: composite_margin"):
        _call(pipe, sample, options={"candidates": 3})


def test_background_is_kept_beyond_a_pixel_around_the_masks(pipe, sample):
    mask, bg = (sample.human_mask, sample.object_mask), np.asarray(sample.background)
    image = _call(pipe, sample, mask=mask, background=bg).images[0]
    inside = torch.from_numpy(mask[0] | mask[1])[None, None].float()
    near = F.max_pool2d(inside, 3, stride=1, padding=1)[0, 0].numpy() > 0  # the masks grown by one pixel
    assert np.array_equal(image[~near], bg[~near])
    assert (np.abs(image[near].astype(int) - bg[near]).max(-1) > 0).mean() > 0.5  # painted inside


def test_user_mask_skips_stage_one_in_every_form(pipe, sample, tmp_path):
    pair = (sample.human_mask, sample.object_mask)
    preview = mask_preview(*pair, sample.background)
    from PIL import Image

    Image.fromarray(preview).save(tmp_path / "mask.png")
    # The output has the background's size, so a 64 px layout goes with the 64 px background.
    outs = [_call(pipe, sample, mask=m, background=sample.background) for m in (pair, preview, tmp_path / "mask.png")]
    for out in outs:
        assert out.metadata["stage1"] == {"source": "user"}
        assert np.array_equal(out.human_masks[0], sample.human_mask)
        assert np.array_equal(out.images[0], outs[0].images[0])
    h, o = read_layout_mask(preview)
    assert np.array_equal(h, sample.human_mask) and np.array_equal(o, sample.object_mask)


def test_a_paint_program_sketch_in_pure_red_and_blue_is_read():
    sketch = np.full((32, 32, 3), 255, np.uint8)
    sketch[4:20, 4:12] = (255, 0, 0)
    sketch[18:28, 14:26] = (0, 0, 255)
    human, obj = read_layout_mask(sketch)
    assert human.sum() == 16 * 8 and obj.sum() == 10 * 12 and not (human & obj).any()
    sketch[18:28, 14:26] = 255  # no object drawn
    with pytest.raises(ChoiError, match="pure blue"):
        read_layout_mask(sketch)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"interaction": "juggle chainsaws on a unicycle"}, "interaction"),
        ({"box": (0.5, 0.5, 0.4, 0.9)}, "box"),
        ({"num_images": 0}, "num_images"),
        ({"num_images": 17}, r"num_images must be a whole number in \[1, 16\], got 17"),
        ({"steps": 0}, "steps must be"),
        ({"mask_steps": 1001}, "mask_steps must be"),
        ({"guidance": float("nan")}, "guidance must be"),
        ({"mask": (np.zeros((64, 64), bool), np.zeros((64, 64), bool))}, "both the person"),
        ({"mask": (np.ones((64, 64), bool), np.ones((64, 64), bool))}, "both the person"),  # the person hides it
        ({"human": "/nonexistent/human.png"}, "does not exist"),
    ],
)
def test_pipeline_rejects_bad_inputs(pipe, sample, kw, message):
    with pytest.raises(ChoiError, match=message):
        _call(pipe, sample, **kw)


def test_from_pretrained_folder_and_missing(pipe, sample, tmp_path):
    pipe.mask_stage.masks.model.save_pretrained(tmp_path / "m" / "mask")
    pipe.image_stage.renderer.model.save_pretrained(tmp_path / "m" / "image")
    loaded = CHOIPipeline.from_pretrained(tmp_path / "m")  # a folder from before model_index.json
    assert loaded.model_id == str(tmp_path / "m") and loaded.family == "choi-tiny"
    request = dict(background=sample.background, num_images=2, options={"layout_candidates": 2})
    a, b = _call(pipe, sample, **request), _call(loaded, sample, **request)  # save → load: the same images
    assert all(np.array_equal(x, y) for x, y in zip(a.images, b.images, strict=True))
    assert np.array_equal(a.human_masks, b.human_masks)
    assert b.metadata["stage2"]["model"]["id"] == f"{tmp_path / 'm'}/image"
    with pytest.raises(ChoiError, match="neither"):
        CHOIPipeline.from_pretrained(tmp_path / "nothing")
    (tmp_path / "half" / "mask").mkdir(parents=True)
    pipe.mask_stage.masks.model.save_pretrained(tmp_path / "half" / "mask")
    with pytest.raises(ChoiError, match="no model_index.json"):
        CHOIPipeline.from_pretrained(tmp_path / "half")
    index = {"family": "choi-tiny", "components": {"mask": "mask", "image": "image"}}
    (tmp_path / "half" / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ChoiError, match="no image model"):
        CHOIPipeline.from_pretrained(tmp_path / "half")
    (tmp_path / "half" / "model_index.json").write_text(json.dumps({**index, "family": "choi-xl"}))
    with pytest.raises(ChoiError, match="unknown model family 'choi-xl'"):
        CHOIPipeline.from_pretrained(tmp_path / "half")


# --- training ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("data"))


class _TinyTask(ImageTask):
    def model_overrides(self):
        return TINY  # the tiny test model trains at 32 px


def test_training_through_the_shared_loop(dataset, text_encoder, tmp_path):
    cfg = ImageTrainConfig(data=str(dataset), batch_size=4, num_workers=0, val_samples=1, val_steps=2)
    task = _TinyTask(cfg, text_encoder)
    batch = next(iter(task.batches(0)))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["refs"].shape == (4, 2, 3, 32, 32)
    torch.manual_seed(0)
    net = task.build_model()
    loss, _ = task.loss(net, batch)
    loss.backward()
    assert torch.isfinite(loss) and net.refs.role.grad.abs().sum() > 0
    assert len(set(batch["label"].tolist())) > 1
    torch.manual_seed(1)
    plain_loss = task.loss(net, batch)[0]
    for weighted in (replace(cfg, class_balance=1.0),):
        other = _TinyTask(weighted, text_encoder)
        torch.manual_seed(1)
        other_loss = other.loss(net, batch)[0]
        assert torch.isfinite(other_loss) and not torch.isclose(plain_loss, other_loss)
    final = train(task, TrainConfig(steps=2, batch_size=4, warmup_steps=1, log_every=1), tmp_path / "run")
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any("val/mae_in_masks" in line for line in log)
    assert (tmp_path / "run" / "validation" / "step_0000002.png").exists()
    assert ImageGenerator.from_pretrained(final).config.sample_size == 32


@pytest.mark.parametrize("option", ["--rough-masks", "--stage1-masks", "--stage1-strength", "--stage1-model"])
def test_removed_image_training_options_are_refused(dataset, tmp_path, capsys, option):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit:
        main(["train", "image", "--data", str(dataset), "--out", str(out), option, "0.5"])
    err = capsys.readouterr().err.strip()
    assert exit.value.code == 2
    assert f"unrecognized arguments: {option}" in err and "\n" not in err and not out.exists()


def test_init_from_needs_an_image_model(dataset, text_encoder, tmp_path):
    task = ImageTask(ImageTrainConfig(data=str(dataset), init_from=str(tmp_path / "none")), text_encoder)
    with pytest.raises(ChoiError, match="--init-from: no image model"):
        task.build_model()


def _tilted_l() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An L-shaped subject (a long red bar with a blue foot on its right), drawn lying on its side
    and mirrored in the reference; the target mask stands it upright with the foot to the right."""
    ref, sil = torch.zeros(1, 3, 64, 64), torch.zeros(1, 1, 64, 64)
    ref[:, 0, 28:36, 12:52] = 1  # the bar, horizontal
    ref[:, 2, 36:48, 12:20] = 1  # the foot, below its left end
    sil[..., 28:36, 12:52] = sil[..., 36:48, 12:20] = 1
    target = torch.zeros(1, 1, 64, 64)
    target[..., 12:52, 24:32] = 1  # the bar, upright
    target[..., 44:52, 32:44] = 1  # the foot, to the right of its bottom end
    return ref, sil, target


def test_warp_turns_a_tilted_reference_to_fit_its_mask():
    ref, sil, target = _tilted_l()

    def fit(out: torch.Tensor) -> float:
        return float((out[3] > 0.5).logical_and(target[0, 0] > 0).sum() / target.sum())

    plain, turned = warp_into_masks(ref, sil, target)[0], warp_into_masks(ref, sil, target, turns=8)[0]
    assert fit(turned) > 0.9 > fit(plain) + 0.2
    assert turned[0, 14:42, 25:31].min() > 0.9 and turned[2, 45:51, 34:42].min() > 0.9  # red bar, blue foot
    # a subject that already fits keeps the plain stretch, and turns=0 is the plain stretch
    upright, upright_sil = turned[None, :3], (turned[None, 3:] > 0.5).float()
    torch.testing.assert_close(
        warp_into_masks(upright, upright_sil, target, turns=8), warp_into_masks(upright, upright_sil, target)
    )
    assert turns_and_mirrors(4).shape == (8, 2, 2) and torch.equal(turns_and_mirrors(4)[0], torch.eye(2))


def _iou(a, b) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return float((a & b).sum() / (a | b).sum())


def test_snap_draws_the_subjects_own_outline_where_a_rough_mask_puts_it():
    _, sil, target = _tilted_l()
    rough = target.clone()
    rough[..., ::3, :] = 0  # ragged: every third row missing, and a hole in the bar
    rough[..., 20:30, 26:30] = 0
    snapped = snap_silhouettes(sil, rough, turns=8)
    assert snapped.dtype == torch.bool and snapped.shape == (1, 1, 64, 64)
    assert _iou(snapped[0, 0], target[0, 0]) > 0.85 > _iou(rough[0, 0], target[0, 0]) + 0.2  # the L, upright
    # drawn at another size: the same outline, finer
    large = snap_silhouettes(sil, rough, turns=8, size=(128, 128))
    assert large.shape == (1, 1, 128, 128)
    assert _iou(F.interpolate(large.float(), size=64, mode="area")[0, 0] > 0.5, snapped[0, 0]) > 0.9
    assert not snap_silhouettes(sil, torch.zeros_like(rough), turns=8).any()
    assert not snap_silhouettes(torch.zeros_like(sil), rough, turns=8).any()


def test_fit_object_masks_replaces_ragged_stage1_objects_behind_the_person():
    _, sil, target = _tilted_l()
    rough = target[0, 0].numpy().astype(bool).copy()
    rough[::3] = False
    human = np.zeros((2, 64, 64), bool)
    human[0, 30:40, 20:30] = True  # the person in front of the bar
    human[1] = True  # a person everywhere: nothing left of the fit, so stage 1's mask is kept
    objects = np.stack([rough & ~human[0], rough])
    fitted = fit_object_masks(human, objects, sil[0, 0].numpy().astype(bool), turns=8)
    assert fitted.shape == objects.shape and fitted.dtype == bool
    assert not (fitted[0] & human[0]).any()
    assert _iou(fitted[0], target[0, 0].numpy().astype(bool) & ~human[0]) > 0.85
    assert _iou(objects[0], target[0, 0].numpy().astype(bool) & ~human[0]) < 0.7
    assert np.array_equal(fitted[1], objects[1])
    # a large, non-square layout: the turn is searched at a working size, the outline drawn at full size
    big = lambda m: np.kron(m, np.ones((3, 5), bool))  # noqa: E731 - (K, 64, 64) → (K, 192, 320)
    fitted_big = fit_object_masks(big(human), big(objects), sil[0, 0].numpy().astype(bool), turns=8)
    assert fitted_big.shape == (2, 192, 320) and not (fitted_big[0] & big(human)[0]).any()
    assert _iou(fitted_big[0], big(fitted)[0]) > 0.85


def test_prior_strength_keeps_each_warped_reference_where_it_covers(image_model, text_encoder):
    masks = torch.zeros(1, 2, 32, 32)
    masks[:, 0, 4:28, 8:16] = 1  # person
    masks[:, 1, 10:20, 14:26] = 1  # object, partly behind the person
    cond = ImageConditions.build(
        text_encoder(["kick ball"]), torch.rand(1, 2, 3, 40, 40), torch.ones(1, 2, 40, 40),
        region=torch.ones(1, 1, 32, 32), masks=masks,
    )  # fmt: skip
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([500])
    with torch.no_grad():
        plain = image_model.encode_conditions(cond)
        out = {a: image_model.denoise(x, t, image_model.encode_conditions(cond, a)) for a in ((0, 0), (1, 0), (1, 1))}
        torch.testing.assert_close(out[(0, 0)], image_model.denoise(x, t, plain))  # 0: as trained
    person, obj = masks[0, 0] > 0, (masks[0, 1] > 0) & (masks[0, 0] == 0)
    skip = plain.skip[0]
    torch.testing.assert_close(out[(1, 0)][0][:, person], skip[:, person])  # the person's pixels kept ...
    torch.testing.assert_close(out[(1, 0)][0][:, obj], out[(0, 0)][0][:, obj])  # ... the object's repainted
    torch.testing.assert_close(out[(1, 1)][0][:, obj], skip[:, obj])
    outside = masks[0].sum(0) == 0
    torch.testing.assert_close(out[(1, 1)][0][:, outside], out[(0, 0)][0][:, outside])  # no prior there
    assert not torch.allclose(out[(0, 0)][0][:, person], skip[:, person])
    for bad in ((1.5, 0), (0.5,), (float("nan"), 1)):
        with pytest.raises(ChoiError, match="prior strength"):
            image_model.encode_conditions(cond, bad)


def test_pipeline_prior_strength_changes_only_the_masks_and_is_recorded(pipe, sample):
    mask = (sample.human_mask, sample.object_mask)
    bg = np.asarray(sample.background)
    repaint, keep = (
        _call(pipe, sample, mask=mask, background=bg, options={"prior_strength": a}) for a in ((0, 0), (1, 1))
    )
    assert repaint.metadata["options"]["prior_strength"] == [0.0, 0.0]
    assert keep.metadata["options"]["prior_strength"] == [1.0, 1.0]
    inside = sample.human_mask | sample.object_mask
    assert not np.array_equal(repaint.images[0][inside], keep.images[0][inside])
    near = F.max_pool2d(torch.from_numpy(inside)[None, None].float(), 17, stride=1, padding=8)[0, 0].numpy() > 0
    assert np.array_equal(repaint.images[0][~near], bg[~near]) and np.array_equal(keep.images[0][~near], bg[~near])
    assert _call(pipe, sample, mask=mask, background=bg).metadata["options"]["prior_strength"] == [0.5, 1.0]
    # "H,O" is how --set gives it; the same as the pair
    given = _call(pipe, sample, mask=mask, background=bg, options={"prior_strength": "1,1"})
    assert np.array_equal(given.images[0], keep.images[0])
    for bad in ("0.5", (0.5, 2), "a,b"):
        with pytest.raises(ChoiError, match="prior.strength"):
            _call(pipe, sample, mask=mask, background=bg, options={"prior_strength": bad})
