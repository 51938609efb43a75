"""Stage 1, the mask generator: model, conditioning, pipeline, training recipe and `choi mask`."""

import importlib
import json

import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler
from PIL import Image

from choi.cli import main
from choi.data.segment import silhouette
from choi.data.shards import interaction_counts, iter_samples
from choi.errors import ChoiError
from choi.models.conditioning import box_coverage, box_in_window, crop_windows, fit_silhouettes, zoom_window
from choi.models.mask_generator import MASK_PRESETS, MaskConditions, MaskGenerator
from choi.models.text_encoder import TextEmbeddings, TextEncoder
from choi.pipelines.inputs import mask_preview, parse_box
from choi.pipelines.sampling import denoise, get_noise
from choi.pipelines.tiny.mask import MaskPipeline, to_masks, zoom_pixels
from choi.training.diffusion import class_weights, sample_weights
from choi.training.loop import TrainConfig, train
from choi.training.mask import MaskTask, MaskTrainConfig, mask_collate, train_mask, zoom_rows
from choi.vocabulary import CLASSES, UNLABELLED
from fake_samples import write_tiny_dataset
from sd_components import FAST, killed_after
from tiny_choi import OPTIONS

STEPS = 4  # sampler steps in tests: enough to exercise the multistep solver, cheap on a CPU


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def text_encoder():
    return TextEncoder()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MaskGenerator.from_preset("tiny").eval()


@pytest.fixture(scope="module")
def pipe(model, text_encoder):
    return MaskPipeline(model, text_encoder)


def _shapes(size=64):
    """A standing-person-like and a bar-like silhouette."""
    yy, xx = np.mgrid[:size, :size] / size
    human = ((xx - 0.5) ** 2 / 0.01 + (yy - 0.5) ** 2 / 0.16 < 1) | ((xx - 0.5) ** 2 + (yy - 0.15) ** 2 < 0.01)
    obj = (np.abs(xx - 0.5) < 0.4) & (np.abs(yy - 0.6) < 0.1)
    return human, obj


def _request(**kw):
    human, obj = _shapes()
    args = dict(human_mask=human, object_mask=obj, interaction="ride bicycle", seed=0, num_inference_steps=STEPS)
    return {**args, **kw}


# --- model ------------------------------------------------------------------------------------


def test_presets_build_and_predict_two_channels(text_encoder):
    human, obj = _shapes()
    refs = torch.from_numpy(np.stack([human, obj])[None].astype(np.float32))
    cond = MaskConditions.build(text_encoder(["kick ball"]), refs, box=torch.tensor([[0.1, 0.2, 0.7, 0.9]]))
    torch.manual_seed(0)
    net = MaskGenerator.from_preset("tiny")
    assert net(torch.randn(1, 2, 64, 64), torch.tensor([10]), cond).shape == (1, 2, 64, 64)
    assert set(MASK_PRESETS) >= {"tiny", "small"}
    with pytest.raises(ChoiError, match="unknown mask model config"):
        MaskGenerator.from_preset("huge")


def test_silhouettes_are_normalised_for_position_and_scale():
    canvas = torch.zeros(2, 1, 128, 128)
    canvas[0, 0, 10:50, 20:40] = 1  # a 40x20 bar near the corner
    canvas[1, 0, 40:120, 60:100] = 1  # the same shape, twice as large, elsewhere
    a, b = fit_silhouettes(canvas, 32) > 0.5
    assert (a & b).sum() / (a | b).sum() > 0.9 and a.float().mean() > 0.3
    assert fit_silhouettes(torch.zeros(1, 1, 64, 64), 32).sum() == 0


def test_box_coverage_is_sub_pixel_exact():
    cov = box_coverage(torch.tensor([[0.1, 0.25, 0.5, 0.55]]), 10)[0, 0]
    assert cov.sum().item() == pytest.approx(4 * 3, abs=1e-5)  # 0.4*10 wide, 0.3*10 tall


def test_cross_attention_alone_makes_the_text_matter(model, text_encoder):
    """Same pooled sentence vector, different token sequences: only cross-attention can tell them apart."""
    human, obj = _shapes()
    refs = torch.from_numpy(np.stack([human, obj])[None].astype(np.float32)).expand(2, -1, -1, -1)
    emb = text_encoder(["ride bicycle", "carry bicycle"])
    same_pooled = TextEmbeddings(emb.tokens, emb.mask, emb.pooled[:1].expand(2, -1))
    cond = MaskConditions.build(same_pooled, refs)
    x = torch.randn(1, 2, 64, 64).expand(2, -1, -1, -1)
    with torch.no_grad():
        out = model(x, torch.tensor([500, 500]), cond)
        assert (out[0] - out[1]).abs().mean() > 1e-3
        # A dropped text is replaced by the null token: then the text no longer matters.
        dropped = model(x, torch.tensor([500, 500]), cond.dropped(text=True))
        torch.testing.assert_close(dropped[0], dropped[1])


# --- pipeline ---------------------------------------------------------------------------------


def test_pipeline_output_shapes_and_metadata(pipe):
    out = pipe(**_request(num_images=2, seed=3, height=96, width=80))
    assert out.human_masks.shape == out.object_masks.shape == (2, 96, 80)
    assert out.human_masks.dtype == bool and out.soft.shape == (2, 2, 64, 64)
    assert not (out.human_masks & out.object_masks).any()  # visible masks never overlap
    meta = out.metadata
    assert meta["seeds"] == [3, 4] and meta["num_inference_steps"] == STEPS
    assert meta["interaction_class"] == "ride_bicycle" and meta["model"]["id"] == "unsaved"
    assert pipe(**_request()).human_masks.shape == (1, 64, 64)  # default: the reference's size


def test_save_load_round_trip_gives_identical_masks(model, text_encoder, pipe, tmp_path):
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "diffusion_pytorch_model.safetensors").exists()
    loaded = MaskPipeline.from_pretrained(tmp_path / "m", text_encoder=text_encoder)
    a, b = pipe(**_request(seed=11)), loaded(**_request(seed=11))
    np.testing.assert_array_equal(a.soft, b.soft)
    assert len(b.metadata["model"]["version"]) == 16  # the weights' digest


def test_image_k_does_not_depend_on_num_images(pipe):
    many = pipe(**_request(num_images=3, seed=20))
    one = pipe(**_request(num_images=1, seed=22))
    np.testing.assert_allclose(many.soft[2], one.soft[0], atol=1e-4)
    assert (many.human_masks[2] != one.human_masks[0]).mean() < 1e-3
    gens = [torch.Generator().manual_seed(s) for s in (20, 21, 22)]
    np.testing.assert_allclose(pipe(**_request(num_images=3, seed=None, generator=gens)).soft, many.soft, atol=1e-5)


def test_the_sampling_loop_works_with_a_sigma_space_scheduler(model, text_encoder):
    """Euler (sigma space) and DPM-Solver++ solve the same ODE: from the same noise, the tiny stage 1 draws
    the same masks with either, classifier-free guidance included."""
    human, obj = _shapes()
    refs = torch.from_numpy(np.stack([human, obj])[None].astype(np.float32))
    cond = MaskConditions.build(text_encoder(["ride bicycle"]), refs, box=torch.tensor([[0.1, 0.2, 0.7, 0.9]]))
    c = model.config
    schedule = dict(num_train_timesteps=c.num_train_timesteps, beta_schedule=c.beta_schedule,
                    prediction_type=c.prediction_type, timestep_spacing="trailing")  # fmt: skip
    dpm = DPMSolverMultistepScheduler(**schedule, algorithm_type="dpmsolver++", final_sigmas_type="zero")
    noise = get_noise(
        [torch.Generator().manual_seed(0)], (2, c.sample_size, c.sample_size), model.device, torch.float32
    )
    with torch.no_grad():
        enc, uncond = model.encode_conditions(cond), model.encode_conditions(cond.dropped(text=True, refs=True))
    for guidance, dropped in ((1.0, None), (2.5, uncond)):
        euler_x = denoise(model, EulerDiscreteScheduler(**schedule), noise, enc, dropped, 16, guidance)
        dpm_x = denoise(model, dpm, noise, enc, dropped, 16, guidance)
        assert euler_x.shape == (1, 2, c.sample_size, c.sample_size) and torch.isfinite(euler_x).all()
        # 0.02 measured without guidance; skipping scale_model_input gives 0.10, skipping init_noise_sigma 0.65
        assert (euler_x - dpm_x).abs().mean() < 0.05, guidance


def test_zoom_window_is_a_square_around_the_box_inside_the_frame():
    boxes = torch.tensor([[0.4, 0.3, 0.6, 0.8], [0.0, 0.0, 0.05, 0.1], [0.9, 0.5, 1.0, 0.6], [0.0, 0.0, 1.0, 1.0]])
    win = zoom_window(boxes, margin=0.2)
    side = win[:, 2:] - win[:, :2]
    torch.testing.assert_close(side[:, 0], side[:, 1])  # square in normalised coordinates: the frame's aspect
    torch.testing.assert_close(side[:, 0], torch.tensor([0.7, 0.25, 0.25, 1.0]))  # 0.5 x 1.4; the minimum; capped
    assert (win >= 0).all() and (win <= 1).all()
    assert (win[:, :2] <= boxes[:, :2]).all() and (win[:, 2:] >= boxes[:, 2:]).all()  # the box stays inside
    torch.testing.assert_close(win[0], torch.tensor([0.15, 0.2, 0.85, 0.9]))  # centred when it fits
    inner = box_in_window(boxes, win)
    torch.testing.assert_close(inner[0], torch.tensor([0.25, 0.1, 0.45, 0.6]) / 0.7)
    torch.testing.assert_close(inner[3], boxes[3])  # a window on the whole frame changes nothing


def test_crop_windows_cuts_exactly_and_the_full_frame_is_area_downsampling():
    x = torch.rand(2, 3, 128, 128)
    full = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 2)
    torch.testing.assert_close(crop_windows(x, full, 64), torch.nn.functional.interpolate(x, size=64, mode="area"))
    centre = torch.tensor([[0.25, 0.25, 0.75, 0.75], [0.5, 0.0, 1.0, 0.5]])
    cut = crop_windows(x, centre, 64)
    torch.testing.assert_close(cut[0], x[0, :, 32:96, 32:96])
    torch.testing.assert_close(cut[1], x[1, :, 0:64, 64:128])


def test_zoom_rows_cut_masks_and_box_alike(dataset):
    batch = mask_collate(list(iter_samples(str(dataset), split="train", limit=4)), 64, full=True)
    torch.manual_seed(0)
    zoomed = zoom_rows(batch, 1.0, (0.1, 0.3))
    for masks, box in zip(zoomed["masks"], zoomed["union_box"], strict=True):
        ys, xs = torch.nonzero(masks.amax(0) > 0.5, as_tuple=True)
        drawn = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) / 64
        torch.testing.assert_close(drawn, box, atol=2 / 64, rtol=0)  # the box still bounds the pair
        assert (box[2:] - box[:2]).max() >= 1 / 1.6 - 1e-4  # and fills the window up to its margin
    untouched = zoom_rows(batch, 0.0, (0.1, 0.3))
    for key in ("masks", "background", "union_box"):
        assert torch.equal(untouched[key], batch[key])


def test_zoomed_masks_land_in_the_window_around_the_box(pipe):
    bg = np.full((96, 128, 3), 200, np.uint8)
    box = (0.3, 0.2, 0.6, 0.9)
    out = pipe(**_request(background=bg, box=box, zoom=True))
    left, top, right, bottom = zoom_pixels(box, 96, 128)
    assert out.metadata["zoom_window"] == [left, top, right, bottom]
    assert (right - left) / 128 == pytest.approx((bottom - top) / 96, abs=0.02)  # the frame's aspect
    assert out.human_masks.shape == (1, 96, 128) and out.soft.shape == (1, 2, 64, 64)
    outside = np.ones((96, 128), bool)
    outside[top:bottom, left:right] = False
    assert not out.human_masks[0][outside].any() and not out.object_masks[0][outside].any()
    plain = pipe(**_request(background=bg, box=box))
    assert plain.metadata["zoom_window"] is None and not np.array_equal(plain.soft, out.soft)
    assert pipe(**_request(zoom=True)).metadata["zoom_window"] is None  # nothing to zoom on without a box


def test_init_masks_are_redrawn_from_part_way(pipe):
    human, obj = _shapes()
    sketch = (np.roll(human, 5, axis=1), np.roll(obj, -4, axis=0))  # a layout unlike any fresh draw
    out = pipe(**_request(init_masks=sketch, strength=0.5, num_images=2, box=(0.1, 0.1, 0.9, 0.9), zoom=True))
    assert out.human_masks.shape == (2, 64, 64) and out.metadata["init_masks"] and out.metadata["strength"] == 0.5
    again = pipe(**_request(init_masks=sketch, strength=0.5, num_images=2, box=(0.1, 0.1, 0.9, 0.9), zoom=True))
    np.testing.assert_array_equal(out.soft, again.soft)  # seeded
    fresh = pipe(**_request(num_images=2, box=(0.1, 0.1, 0.9, 0.9), zoom=True))
    assert np.abs(out.soft - fresh.soft).mean() > 1e-3  # the sketch, not only the seed, shapes the result
    other = pipe(**_request(init_masks=sketch, strength=0.25, num_images=2, box=(0.1, 0.1, 0.9, 0.9), zoom=True))
    assert np.abs(other.soft - out.soft).mean() > 1e-3
    assert pipe(**_request()).metadata["strength"] is None


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(init_masks=(np.zeros((32, 32), bool),) * 2), "init_masks must be"),
        (dict(init_masks=(np.zeros((64, 64), bool),)), "init_masks must be"),
        (dict(init_masks=(np.zeros((64, 64), bool),) * 2, strength=0), r"strength must be a number in \(0, 1\]"),
        (dict(init_masks=(np.zeros((64, 64), bool),) * 2, strength=1.5), "strength must be"),
        (dict(init_masks=(np.zeros((64, 64), bool),) * 2, strength=True), "strength must be"),
    ],
)
def test_init_masks_are_checked(pipe, kw, message):
    with pytest.raises(ChoiError, match=message):
        pipe(**_request(**kw))


def test_interaction_and_box_condition_the_masks(pipe):
    ride = pipe(**_request(seed=5))
    carry = pipe(**_request(seed=5, interaction="carrying a bike"))
    assert np.abs(ride.soft - carry.soft).mean() > 1e-3
    left = pipe(**_request(seed=5, box=(0.05, 0.1, 0.5, 0.9)))
    right = pipe(**_request(seed=5, box=(0.5, 0.1, 0.95, 0.9)))
    assert np.abs(left.soft - right.soft).mean() > 1e-3
    assert np.abs(left.soft - ride.soft).mean() > 1e-3


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"interaction": "juggle chainsaws"}, "unknown interaction"),
        ({"box": (0.5, 0.1, 0.2, 0.9)}, "x1 < x2"),
        ({"box": (0.1, 0.1, 1.5, 0.9)}, "x1 < x2"),
        ({"box": "0.1,0.2,0.3"}, "four numbers"),
        ({"num_images": 0}, "num_images"),
        ({"background": np.zeros((4, 4, 7))}, "RGB image"),
    ],
)
def test_pipeline_rejects_bad_inputs(pipe, kw, message):
    with pytest.raises(ChoiError, match=message):
        pipe(**_request(**kw))


def test_parse_box():
    assert parse_box("0.1, 0.2,0.9,1") == (0.1, 0.2, 0.9, 1.0)
    with pytest.raises(ChoiError):
        parse_box("a,b,c,d")


def test_text_encoder_caches_and_understands_paraphrases(text_encoder):
    emb = text_encoder(["riding a bike", "ride bicycle", "drinking from a cup"])
    assert emb.tokens.shape == (3, 16, 384) and emb.mask.dtype == torch.bool
    sim = emb.pooled @ emb.pooled.T
    assert sim[0, 1] > sim[0, 2] + 0.2
    again = text_encoder(["ride bicycle"])
    torch.testing.assert_close(again.tokens[0], emb.tokens[1], rtol=0, atol=0)


# --- reference segmentation -------------------------------------------------------------------


def _photo(size=96, colour=(205, 220, 235), seed=0):
    """A subject on a plain, slightly noisy background, with a pinhole the colour of the wall."""
    rng = np.random.default_rng(seed)
    img = np.clip(np.array(colour) + rng.normal(0, 2, (size, size, 3)), 0, 255).astype(np.uint8)
    truth = np.zeros((size, size), bool)
    truth[15:85, 40:56] = True  # body
    truth[8:20, 42:54] = True  # head
    truth[30:34, 20:76] = True  # thin arms, 4 px
    img[truth] = (60, 40, 30)
    img[50:52, 47:49] = colour  # a button the colour of the background: a pinhole to fill
    return img, truth


def test_silhouette_of_a_plain_background_photo():
    img, truth = _photo()
    mask = silhouette(img)
    assert (mask & truth).sum() / (mask | truth).sum() > 0.97
    rgba = np.dstack([img, truth.astype(np.uint8) * 255])
    np.testing.assert_array_equal(silhouette(rgba), truth)
    with pytest.raises(ChoiError, match="no subject"):
        silhouette(np.full((32, 32, 3), 200, np.uint8))


# --- training ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("data"))


def _task(dataset, text_encoder, **kw):
    cfg = MaskTrainConfig(**{"data": str(dataset), "batch_size": 4, "num_workers": 0, "val_samples": 2, "val_steps": 2,
                             **kw})  # fmt: skip
    return MaskTask(cfg, text_encoder)


def test_training_step_with_every_condition_dropped(dataset, text_encoder):
    task = _task(dataset, text_encoder, p_drop_text=1.0, p_drop_refs=1.0, p_drop_box=1.0, p_drop_background=1.0)
    torch.manual_seed(0)
    net = task.build_model()
    batch = next(iter(task.batches(0)))
    assert batch["masks"].shape == (4, 2, 64, 64) and batch["text_tokens"].shape == (4, 16, 384)
    loss, _ = task.loss(net, batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert net.null_text.grad.abs().sum() > 0 and net.null_refs.grad.abs().sum() > 0
    assert net.text_proj.weight.grad is None or net.text_proj.weight.grad.abs().sum() == 0  # text fully dropped


def test_a_zoom_trained_model_zooms_on_a_box_by_default(dataset, text_encoder):
    task = _task(dataset, text_encoder, p_zoom=0.5)
    torch.manual_seed(0)
    net = task.build_model()
    assert net.config.zoom and not _task(dataset, text_encoder).build_model().config.zoom
    batch = next(iter(task.batches(0)))
    assert batch["full_masks"].shape[:2] == (4, 2) and batch["full_background"].shape[:2] == (4, 3)
    loss, _ = task.loss(net, batch)
    assert torch.isfinite(loss)
    pipe = MaskPipeline(net.eval(), text_encoder)
    assert pipe(**_request(box=(0.3, 0.2, 0.6, 0.9))).metadata["zoom_window"] is not None
    assert pipe(**_request(box=(0.3, 0.2, 0.6, 0.9), zoom=False)).metadata["zoom_window"] is None


def test_batches_are_deterministic_for_exact_resume(dataset, text_encoder):
    task = _task(dataset, text_encoder)
    a, b = next(iter(task.batches(3))), next(iter(task.batches(3)))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_a_run_killed_mid_epoch_resumes_to_the_same_weights(dataset, text_encoder, tmp_path):
    # 8 training samples in batches of 2: the checkpoint at step 2 is in the middle of the first epoch
    cfg = _task(dataset, text_encoder, batch_size=2).cfg
    straight = train(MaskTask(cfg, text_encoder), FAST, tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        train(killed_after(MaskTask)(cfg, text_encoder), FAST, tmp_path / "b")
    resumed = train(MaskTask(cfg, text_encoder), FAST, tmp_path / "b", resume=True)
    a, b = (MaskGenerator.from_pretrained(run).state_dict() for run in (straight, resumed))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_training_smoke_through_the_shared_loop(dataset, text_encoder, tmp_path):
    task = _task(dataset, text_encoder)
    cfg = TrainConfig(steps=3, batch_size=4, lr=1e-3, warmup_steps=1, checkpoint_every=2, log_every=1)
    final = train(task, cfg, tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    saved = {k: v for k, v in MaskGenerator.from_pretrained(final).config.items() if not k.startswith("_")}
    assert config["task"]["model"] == json.loads(json.dumps(saved))  # the resolved config is the model's
    assert config["task"]["model"]["patch_size"] == MaskGenerator.preset_config("tiny")["patch_size"]
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in log if "loss" in line] == [1, 2, 3]
    assert any("val/box_iou" in line for line in log)
    grid = Image.open(tmp_path / "run" / "validation" / "step_0000003.png")
    assert grid.size == (3 * 32, 2 * 32 + 2)
    out = MaskPipeline.from_pretrained(final, text_encoder=text_encoder)(**_request())
    assert out.human_masks.shape == (1, 64, 64)
    # Fine-tuning starts from exactly the saved weights; a folder without a mask model is refused.
    started = _task(dataset, text_encoder, init_from=str(final)).build_model()
    saved = MaskGenerator.from_pretrained(final).state_dict()
    assert all(torch.equal(t, saved[k]) for k, t in started.state_dict().items())
    with pytest.raises(ChoiError, match="--init-from: no mask model"):
        _task(dataset, text_encoder, init_from=str(tmp_path / "none")).build_model()


def test_a_model_is_fine_tuned_at_another_mask_size(dataset, text_encoder, tmp_path):
    cfg = TrainConfig(steps=1, batch_size=4, lr=1e-3, warmup_steps=1, log_every=1)
    first = train(_task(dataset, text_encoder), cfg, tmp_path / "at64")
    task = _task(dataset, text_encoder, init_from=str(first), sample_size=48, p_zoom=0.5)
    net = task.build_model()
    saved = MaskGenerator.from_pretrained(first).state_dict()
    assert net.config.sample_size == 48 and all(torch.equal(t, saved[k]) for k, t in net.state_dict().items())
    batch = next(iter(task.batches(0)))
    assert batch["masks"].shape == (4, 2, 48, 48)
    loss, _ = task.loss(net, batch)  # zoomed rows are cut at the new size too
    assert torch.isfinite(loss)
    final = train(task, cfg, tmp_path / "at48")
    pipe = MaskPipeline.from_pretrained(final, text_encoder=text_encoder)
    assert pipe.model.config.sample_size == 48
    out = pipe(**_request(box=(0.3, 0.2, 0.6, 0.9)))
    assert out.human_masks.shape == (1, 64, 64) and out.soft.shape[-1] == 48  # drawn at 48, returned at 64
    with pytest.raises(ChoiError, match="--sample-size must be a multiple of the patch size 4"):
        train_mask(str(dataset), str(tmp_path / "bad"), steps=1, sample_size=50)


def test_class_weights_balance_rare_classes():
    counts = {"ride_bicycle": 1400, "kick_ball": 1000, "push_chair": 140}
    n = {name: torch.tensor(float(c)) for name, c in counts.items()}
    index = {c.name: c.index for c in CLASSES}
    plain = class_weights(counts, 0.0)
    torch.testing.assert_close(plain, torch.ones(len(CLASSES)))
    full = class_weights(counts, 1.0)
    totals = [float(full[index[name]] * n[name]) for name in counts]
    assert max(totals) - min(totals) < 1e-3 * max(totals)  # every class weighs the same in total
    mean = sum(float(full[index[name]] * n[name]) for name in counts) / sum(counts.values())
    assert abs(mean - 1) < 1e-5  # the average training sample still weighs 1
    half = class_weights(counts, 0.5)
    assert full[index["push_chair"]] > half[index["push_chair"]] > 1 > half[index["ride_bicycle"]]
    assert full[index["carry_chair"]] == 1  # absent from the counts
    labels = torch.tensor([index["push_chair"], UNLABELLED])
    assert sample_weights(labels, full).flatten().tolist() == [pytest.approx(float(full[index["push_chair"]])), 1.0]
    with pytest.raises(ValueError, match="class balance"):
        class_weights(counts, 1.5)


def test_class_balance_reweights_the_loss(dataset, text_encoder):
    counts = interaction_counts(dataset, "train")
    decoded = [s.interaction for s in iter_samples(dataset, split="train")]
    assert counts == {name: decoded.count(name) for name in set(decoded)}
    plain, balanced = _task(dataset, text_encoder), _task(dataset, text_encoder, class_balance=1.0)
    assert plain.class_weights is None
    torch.testing.assert_close(balanced.class_weights, class_weights(counts, 1.0))
    torch.manual_seed(0)
    net = plain.build_model()
    batch = next(iter(plain.batches(0)))
    assert len(set(batch["label"].tolist())) > 1  # classes of unequal count, so unequal weights
    losses = []
    for task in (plain, balanced):
        torch.manual_seed(1)
        losses.append(task.loss(net, batch)[0])
    assert torch.isfinite(losses[1]) and not torch.isclose(losses[0], losses[1])


# --- CLI --------------------------------------------------------------------------------------


@pytest.fixture()
def cli_inputs(tmp_path):
    human, _ = _photo(96, seed=1)
    obj = np.full((80, 80, 3), 240, np.uint8)
    obj[30:50, 10:70] = (20, 120, 200)
    Image.fromarray(human).save(tmp_path / "human.png")
    Image.fromarray(obj).save(tmp_path / "object.png")
    Image.fromarray(np.full((72, 100, 3), 90, np.uint8)).save(tmp_path / "bg.png")
    (tmp_path / "notimage.png").write_text("not a png")
    sketch = np.full((48, 48, 3), 255, np.uint8)
    sketch[5:40, 18:28], sketch[30:40, 28:45] = (230, 40, 40), (40, 90, 230)  # person red, object blue
    Image.fromarray(sketch).save(tmp_path / "sketch.png")
    return tmp_path


def _args(root, model, *extra, **kw):
    """`choi mask` on the tiny real model folder (tests/tiny_choi.py); ``kw`` replaces flags, ``extra`` adds some."""
    base = {
        "--human": root / "human.png",
        "--object": root / "object.png",
        "--interaction": "a person riding a bike",
        "--model": model,
        "--out": root / "out",
        "--mask-steps": "3",
    }
    base.update(kw)
    return ["mask", *[str(x) for kv in base.items() for x in kv if x is not None], *map(str, extra)]


def test_cli_mask_end_to_end(cli_inputs, tiny_model_dir):
    root = cli_inputs
    args = _args(root, tiny_model_dir, **{"--background": root / "bg.png", "--box": "0.1,0.2,0.9,0.95"})
    assert main([*args, "--seed", "5", "--num-images", "2"]) == 0
    out = root / "out"
    for k in (0, 1):
        for role in ("human", "object"):
            im = Image.open(out / f"mask_{k}_{role}.png")
            assert im.mode == "L" and im.size == (100, 72)
        assert Image.open(out / f"mask_{k}_preview.png").mode == "RGB"
        assert not (out / f"image_{k}.png").exists()  # stage 1 alone
    assert (out / "reference_human.png").exists() and (out / "reference_object.png").exists()
    record = json.loads((out / "choi.json").read_text())
    assert record["seeds"] == [5, 6] and record["box"] == [0.1, 0.2, 0.9, 0.95]
    assert record["request"]["human"].endswith("human.png") and record["interaction_class"] == "ride_bicycle"
    assert record["stage1"]["num_inference_steps"] == 3 and "stage2" not in record
    assert [img["human_mask"] for img in record["images"]] == ["mask_0_human.png", "mask_1_human.png"]
    assert "image" not in record["images"][0]
    assert record["stage1"]["object_fit_turns"] == 48  # the object masks `choi generate` would render in
    raw_args = _args(root, tiny_model_dir, "--set", "fit_object=false", **{"--out": root / "raw"})
    assert main([*raw_args, "--background", str(root / "bg.png"), "--box", "0.1,0.2,0.9,0.95", "--seed", "5"]) == 0
    raw_record = json.loads((root / "raw" / "choi.json").read_text())
    assert "object_fit_turns" not in raw_record["stage1"] and raw_record["options"]["fit_object"] is False
    candidates = OPTIONS["layout_candidates"]  # the model folder's own default (model_index.json)
    assert record["stage1"]["layout_candidates"] == raw_record["stage1"]["layout_candidates"] == candidates
    one_args = _args(root, tiny_model_dir, "--set", "layout_candidates=1", **{"--out": root / "one"})
    assert main([*one_args, "--seed", "5"]) == 0
    one_record = json.loads((root / "one" / "choi.json").read_text())
    assert one_record["stage1"]["layout_candidates"] == one_record["options"]["layout_candidates"] == 1
    assert one_record["request"]["options"] == {"layout_candidates": "1"}  # as given
    fitted, raw = (np.asarray(Image.open(root / d / "mask_0_object.png")) > 0 for d in ("out", "raw"))
    human = np.asarray(Image.open(root / "raw" / "mask_0_human.png")) > 0
    assert not (fitted & human).any() and not np.array_equal(fitted, raw)


def test_cli_mask_redraws_a_sketch_with_the_shipped_stage_one(tmp_path):
    from choi.world import render_sample

    s = render_sample("test", 13, seed=0)  # riding a bicycle, an unseen pair
    for name, image in (("human", s.human_ref), ("object", s.object_ref), ("bg", s.background)):
        Image.fromarray(image).save(tmp_path / f"{name}.png")
    Image.fromarray(mask_preview(s.human_mask, s.object_mask)).save(tmp_path / "sketch.png")
    box = ",".join(f"{v:.4f}" for v in s.union_box)
    common = ["mask", "--human", str(tmp_path / "human.png"), "--object", str(tmp_path / "object.png")]
    common += ["--interaction", s.text, "--background", str(tmp_path / "bg.png"), "--box", box, "--seed", "0"]
    common += ["--set", f"init_mask={tmp_path / 'sketch.png'}"]
    ious = {}
    for name, strength in (("near", "0.25"), ("fresh", "1")):
        assert main([*common, "--set", f"strength={strength}", "--out", str(tmp_path / name)]) == 0
        human = np.asarray(Image.open(tmp_path / name / "mask_0_human.png")) > 0
        ious[name] = (human & s.human_mask).sum() / (human | s.human_mask).sum()
    record = json.loads((tmp_path / "near" / "choi.json").read_text())
    assert record["stage1"]["init_masks"] and record["stage1"]["strength"] == record["options"]["strength"] == 0.25
    assert record["request"]["options"]["init_mask"].endswith("sketch.png")
    # A quarter of the way to noise the person keeps the sketched pose; from noise stage 1 draws its own.
    assert ious["near"] > 0.7 and ious["near"] > ious["fresh"] + 0.15, ious


@pytest.mark.parametrize(
    "change, extra",
    [
        ({"--human": "missing.png"}, ()),
        ({"--object": "notimage.png"}, ()),
        ({"--box": "0.9,0.2,0.1,0.95"}, ()),
        ({"--box": "0,0,1"}, ()),
        ({"--interaction": "juggling a chainsaw"}, ()),
        ({"--model": "nowhere"}, ()),
        ({"--num-images": "17"}, ()),
        ({"--mask-steps": "0"}, ()),
        ({}, ("--set", "layout_candidates=0")),
        ({}, ("--set", "candidates=2")),  # not an option of choi-tiny
        ({}, ("--set", "init_mask={root}/notimage.png")),
        ({}, ("--set", "init_mask={root}/bg.png")),  # neither a person nor an object in it
        ({}, ("--set", "init_mask={root}/sketch.png", "--set", "strength=0")),
        ({}, ("--set", "init_mask={root}/sketch.png", "--set", "strength=1.5")),
    ],
)
def test_cli_mask_errors_write_nothing(cli_inputs, tiny_model_dir, change, extra, capsys):
    root = cli_inputs
    paths = ("--human", "--object", "--model")
    change = {k: (root / v if k in paths else v) for k, v in change.items()}
    assert main(_args(root, tiny_model_dir, *(e.format(root=root) for e in extra), **change)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("choi: error:") and "\n" not in err, err
    assert not (root / "out").exists()


@pytest.mark.parametrize(
    ("argv", "module", "function", "expected"),
    [
        (
            ["mask", "--config", "small", "--zoom", "0.5", "--sample-size", "96", "--init-from", "m", "--steps", "7"],
            "choi.training.mask",
            "train_mask",
            {"config": "small", "zoom": 0.5, "sample_size": 96, "init_from": "m", "steps": 7, "batch_size": 32},
        ),
        (
            ["image", "--class-balance", "0.5", "--validate-every", "3", "--lr", "1e-4", "--resume"],
            "choi.training.image",
            "train_image",
            {"config": "tiny", "class_balance": 0.5, "validate_every": 3, "lr": 1e-4, "resume": True, "steps": 6000},
        ),
        (
            ["evaluators", "--kinds", "mask, identity", "--workers", "0", "--seed", "3"],
            "choi.training.evaluators",
            "train_evaluators",
            {"kinds": ("mask", "identity"), "workers": 0, "seed": 3, "init_from": None, "batch_size": 64},
        ),
    ],
)
def test_cli_train_passes_its_options_to_the_recipe(monkeypatch, tmp_path, argv, module, function, expected):
    calls = []
    monkeypatch.setattr(importlib.import_module(module), function, lambda *a, **kw: calls.append((a, kw)) or "m")
    assert main(["train", *argv, "--data", "d", "--out", str(tmp_path)]) == 0
    ((args, kwargs),) = calls
    assert args == ("d", str(tmp_path)) and kwargs.items() >= expected.items(), kwargs


def test_cli_train_mask_rejects_a_missing_dataset(tmp_path, capsys):
    assert main(["train", "mask", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "run")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--class-balance", "2", "--class-balance must be between 0 and 1"),
        ("--zoom", "1.5", "--zoom must be between 0 and 1"),
        ("--zoom", "nan", "--zoom must be between 0 and 1"),
    ],
)
def test_cli_train_mask_rejects_a_bad_recipe_option(dataset, tmp_path, capsys, option, value, message):
    args = ["train", "mask", "--data", str(dataset), "--out", str(tmp_path / "run"), option, value]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("stage", ["mask", "image"])
def test_removed_object_focus_option_is_refused(dataset, tmp_path, capsys, stage):
    with pytest.raises(SystemExit) as exit:
        main(["train", stage, "--data", str(dataset), "--out", str(tmp_path / "run"), "--object-focus", "1"])
    err = capsys.readouterr().err.strip()
    assert exit.value.code == 2 and "unrecognized arguments: --object-focus" in err and "\n" not in err


def test_a_faint_object_channel_still_gives_an_object_mask():
    x0 = torch.full((2, 2, 16, 16), -1.0)
    x0[:, 0, 2:14, 2:6] = 1.0  # a clear person
    x0[0, 1, 8:12, 9:13] = -0.4  # an object the model drew faintly: soft 0.3, under the 0.5 threshold
    x0[1, 1, 8:12, 9:13] = 1.0  # and a clear one
    human, obj, _ = to_masks(x0, 32, 32)
    assert human[0, 4:28, 4:12].all() and not human[0, :, 16:].any()
    assert obj[0].sum() > 20 and not (obj[0] & human[0]).any() and obj[0, 16:24, 18:26].all()
    assert np.array_equal(obj[0], obj[1]) or obj[1].sum() >= obj[0].sum()
    empty = torch.full((1, 2, 16, 16), -1.0)
    assert not to_masks(empty, 32, 32)[1].any()  # nothing drawn at all stays empty
