"""The generic pipeline: the family seam, the request, sampling with any scheduler, and the shipped model's output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, EulerDiscreteScheduler

from choi.errors import ChoiError
from choi.models.mask_generator import MaskConditions, MaskGenerator
from choi.models.text_encoder import TextEncoder
from choi.pipelines.choi import CHOIPipeline
from choi.pipelines.request import GenerationRequest
from choi.pipelines.sampling import denoise, get_noise, make_scheduler
from stage2_contract import check_stage2_contract
from tiny_choi import COMMON

EXAMPLES = Path(__file__).parents[1] / "examples"
HUMAN, OBJECT = EXAMPLES / "kick_ball_human.png", EXAMPLES / "ride_bicycle_object.png"

pytestmark = pytest.mark.usefixtures("one_thread")


def test_choi_tiny_family_passes_the_stage2_contract(tiny_pipeline, tmp_path):
    check_stage2_contract(tiny_pipeline, HUMAN, OBJECT, "ride bicycle", tmp_path / "out")


def test_each_condition_changes_the_output(tiny_pipeline):
    base = tiny_pipeline(human=HUMAN, object=OBJECT, interaction="ride bicycle", seed=0)
    for change in ({"interaction": "carry bicycle"}, {"human": EXAMPLES / "fly_kite_human.png"}, {"seed": 1}):
        other = tiny_pipeline(**{"human": HUMAN, "object": OBJECT, "interaction": "ride bicycle", "seed": 0, **change})
        assert not np.array_equal(base.images[0], other.images[0]), change


def test_model_index_names_the_family_and_its_option_defaults(tiny_model_dir, tmp_path):
    pipe = CHOIPipeline.from_pretrained(tiny_model_dir)
    assert pipe.family == "choi-tiny" and pipe.default_options == {"layout_candidates": 2}
    out = pipe.generate_masks(human=HUMAN, object=OBJECT, interaction="kick ball", seed=0)
    assert out.metadata["options"]["layout_candidates"] == 2 and out.images == []
    out = pipe.generate_masks(human=HUMAN, object=OBJECT, interaction="kick ball", seed=0,
                              options={"layout_candidates": 1})  # fmt: skip
    assert out.metadata["stage1"]["layout_candidates"] == 1
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model_index.json").write_text(json.dumps({"family": "choi-xl"}))
    with pytest.raises(ChoiError, match="unknown model family 'choi-xl'"):
        CHOIPipeline.from_pretrained(bad)
    with pytest.raises(ChoiError, match="no model_index.json"):
        CHOIPipeline.from_pretrained(tmp_path)
    (bad / "model_index.json").write_text(json.dumps({"family": "choi-tiny", "options": {"warp": 1}}))
    (bad / "mask").symlink_to(tiny_model_dir / "mask")
    (bad / "image").symlink_to(tiny_model_dir / "image")
    with pytest.raises(ChoiError, match="choi-tiny has no option 'warp'"):
        CHOIPipeline.from_pretrained(bad)


def test_a_folder_from_before_model_index_still_loads(tiny_model_dir, tmp_path):
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    for part in ("mask", "image"):
        (legacy / part).symlink_to(tiny_model_dir / part)
    assert CHOIPipeline.from_pretrained(legacy).family == "choi-tiny"


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"interaction": "x" * 301}, "at most 300"),
        ({"num_images": 2.5}, "num_images must be a whole number"),
        ({"num_images": float("nan")}, "num_images"),
        ({"seed": 2**64}, "seed must be"),
        ({"seed": -1}, "seed must be"),
        ({"guidance": float("inf")}, "guidance"),
        ({"mask_guidance": 1e308}, "mask_guidance"),
        ({"steps": True}, "steps"),
        ({"box": "0,0,1"}, "box"),
        ({"options": ["fit_object"]}, "options"),
    ],
)
def test_the_request_is_validated_in_one_place(fields, message):
    with pytest.raises(ChoiError, match=message):
        GenerationRequest(**{"human": HUMAN, "object": OBJECT, "interaction": "ride bicycle", **fields})


def test_request_from_a_jobs_line_and_its_record(tmp_path):
    line = {"human": "h.png", "object": "o.png", "interaction": "kick ball", "box": [0, 0, 1, 1]}
    req = GenerationRequest.from_dict({**line, "options": {"zoom": True}}, base=tmp_path)
    assert req.human == str(tmp_path / "h.png") and req.box == (0.0, 0.0, 1.0, 1.0)
    assert req.record()["options"] == {"zoom": True} and "mask" not in req.record()
    with pytest.raises(ChoiError, match="a model option now"):
        GenerationRequest.from_dict({"human": "h", "object": "o", "interaction": "kick ball", "layout_candidates": 1})
    with pytest.raises(ChoiError, match="'seed' must be a int"):
        GenerationRequest.from_dict({"human": "h", "object": "o", "interaction": "kick ball", "seed": "3"})


class Oracle:
    """A perfect epsilon-predictor for one known clean sample, in the DDPM parameterisation the models train in."""

    def __init__(self, x0: torch.Tensor, alphas_cumprod: torch.Tensor):
        self.x0, self.abar = x0, alphas_cumprod

    def denoise(self, x, t, cond):
        abar = self.abar[t.round().long()].view(-1, 1, 1, 1)
        return (x - abar.sqrt() * self.x0) / (1 - abar).sqrt()


@pytest.mark.parametrize("scheduler", ["dpm", "euler", "ddpm"])
def test_denoise_works_with_any_diffusers_scheduler(scheduler):
    """A sigma-space scheduler (Euler) needs scale_model_input: without it the oracle's prediction is wrong."""
    config = type("Config", (), {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2",
                                 "prediction_type": "epsilon"})  # fmt: skip
    common = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", timestep_spacing="trailing")
    sched = {
        "dpm": lambda: make_scheduler(config),
        "euler": lambda: EulerDiscreteScheduler(**common),
        "ddpm": lambda: DDPMScheduler(**common),
    }[scheduler]()
    x0 = torch.linspace(-0.8, 0.8, 2 * 8 * 8).reshape(1, 2, 8, 8)
    oracle = Oracle(x0, DDPMScheduler(**common).alphas_cumprod)
    noise = get_noise([torch.Generator().manual_seed(0)], (2, 8, 8), "cpu", torch.float32)
    out = denoise(oracle, sched, noise, None, None, 20, 1.0)
    assert torch.allclose(out, x0, atol=2e-2), (out - x0).abs().max()


def test_tiny_stage1_runs_with_an_euler_scheduler():
    torch.manual_seed(0)
    model = MaskGenerator(**COMMON).eval()
    text = TextEncoder(max_length=model.config.max_text_tokens)(["kick ball"])
    cond = model.encode_conditions(MaskConditions.build(text, torch.ones(1, 2, 16, 16)))
    sched = EulerDiscreteScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                                   prediction_type="v_prediction", timestep_spacing="trailing")  # fmt: skip
    runs = [denoise(model, sched, get_noise([torch.Generator().manual_seed(1)], (2, 32, 32), "cpu", torch.float32),
                    cond, None, 4, 1.0) for _ in range(2)]  # fmt: skip
    assert runs[0].shape == (1, 2, 32, 32) and torch.isfinite(runs[0]).all() and torch.equal(*runs)


def test_shipped_choi_tiny_output_is_unchanged():
    """What users get from the shipped weights: a slice of the demo's first image (seed 0), diffusers-style.

    Recorded from the pipeline before the redesign (bit-identical after it); a change here must be explained.
    """
    pipe = CHOIPipeline.from_pretrained("choi-tiny")
    out = pipe(human=HUMAN, object=OBJECT, interaction="a person riding a bicycle", seed=0)
    expected = np.array([[50, 47, 47], [50, 49, 54], [86, 101, 112]])
    np.testing.assert_allclose(out.images[0][60:63, 60:63, 0].astype(int), expected, atol=3)
    assert out.metadata["interaction_class"] == "ride_bicycle" and out.metadata["seeds"] == [0]


def test_one_trained_stage_is_completed_with_the_shipped_other(tiny_model_dir):
    """`choi train mask|image` writes one stage (RUN/model): it runs with the shipped choi-tiny's other stage."""
    pipe = CHOIPipeline.from_pretrained(tiny_model_dir / "mask")
    assert pipe.mask_stage.masks.model.config.sample_size == 32 and pipe.image_stage.default_size == 128
    pipe = CHOIPipeline.from_pretrained(tiny_model_dir / "image")
    assert pipe.image_stage.default_size == 32


def test_without_a_background_the_output_takes_the_layouts_size(tiny_pipeline):
    human = np.zeros((40, 56), bool)
    obj = np.zeros((40, 56), bool)
    human[5:35, 10:25], obj[20:35, 30:50] = True, True
    out = tiny_pipeline(human=HUMAN, object=OBJECT, interaction="kick ball", mask=(human, obj), seed=0)
    assert out.images[0].shape == (40, 56, 3) and out.metadata["size"] == [40, 56]
    assert tiny_pipeline(human=HUMAN, object=OBJECT, interaction="kick ball", seed=0).images[0].shape == (32, 32, 3)


def test_old_argument_names_say_what_they_became(tiny_pipeline):
    with pytest.raises(ChoiError, match="num_inference_steps is now 'steps'"):
        tiny_pipeline(human=HUMAN, object=OBJECT, interaction="kick ball", num_inference_steps=2)
    with pytest.raises(ChoiError, match="fit_object is a family option"):
        tiny_pipeline(human=HUMAN, object=OBJECT, interaction="kick ball", fit_object=False)


def test_an_output_that_cannot_be_written_is_one_line(tiny_pipeline, tmp_path, monkeypatch):
    import errno

    import choi.pipelines.choi as choi_module

    out = tiny_pipeline(human=HUMAN, object=OBJECT, interaction="ride bicycle", seed=0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ChoiError, match="exists and is not a folder"):
        out.save(tmp_path / "file")

    def full_disk(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(choi_module, "atomic_write_bytes", full_disk)
    with pytest.raises(ChoiError, match="cannot write the outputs to .*: No space left on device"):
        out.save(tmp_path / "out")


def test_sixteen_images_with_four_layout_candidates_each(tiny_pipeline):
    # 64 stage-1 draws, more than one call takes: drawn in calls of 16, each image still its seed's alone
    many = tiny_pipeline(human=HUMAN, object=OBJECT, interaction="ride bicycle", seed=0, num_images=16,
                         options={"layout_candidates": 4})  # fmt: skip
    assert len(many.images) == 16 and many.metadata["seeds"] == list(range(16))
    one = tiny_pipeline(human=HUMAN, object=OBJECT, interaction="ride bicycle", seed=13, num_images=1,
                        options={"layout_candidates": 4})  # fmt: skip
    assert (many.human_masks[13] != one.human_masks[0]).mean() < 1e-3
    assert np.abs(many.images[13].astype(float) - one.images[0].astype(float)).mean() < 1.0


def test_numpy_numbers_are_numbers_and_reach_choi_json_as_json(tiny_pipeline, tmp_path):
    out = tiny_pipeline(human=HUMAN, object=OBJECT, interaction="ride bicycle", seed=np.int64(3),
                        num_images=np.int64(2), guidance=np.float32(2.5), steps=np.int32(3),
                        options={"layout_candidates": np.int64(1), "fit_object": np.bool_(False)})  # fmt: skip
    out.save(tmp_path)
    record = json.loads((tmp_path / "choi.json").read_text())
    assert record["seeds"] == [3, 4] and record["options"]["layout_candidates"] == 1
    assert record["options"]["fit_object"] is False
    with pytest.raises(ChoiError, match="num_images must be a whole number"):
        GenerationRequest(human=HUMAN, object=OBJECT, interaction="ride", num_images=np.float64(2.5))
