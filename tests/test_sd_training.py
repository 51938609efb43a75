"""choi-sd stage-2 training on tiny random SD parts in the public formats (tests/sd_components.py)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from choi.cli import main
from choi.errors import ChoiError
from choi.models.sd_adapter import SDAdapter
from choi.training.loop import TrainConfig, train
from choi.training.sd import SDBase, SDImageTask, SDImageTrainConfig, write_model_index
from sd_components import FAST, killed_after, untrained_and_zero_shot
from stage2_contract import layout

WEIGHTS = "diffusion_pytorch_model.safetensors"
EXAMPLES = Path(__file__).parents[1] / "examples"
TRAINABLE = ("controlnet.", "person_proj.", "object_proj.", "ip_layers.")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def parts(sd_train_parts):
    return sd_train_parts


def _task(parts, kind="inpaint", task_cls=SDImageTask, **options):
    options = {"val_steps": 2, **options}  # the validation at the end of a run: 2 inference steps
    cfg = SDImageTrainConfig(data=str(parts["data"]), model=str(parts[kind]), resolution=32, batch_size=2,
                             num_workers=0, **options)  # fmt: skip
    return task_cls(cfg)


def _log(run: Path, key: str = "loss") -> list[dict]:
    """The lines of ``RUN/log.jsonl`` that have ``key``: training lines by default, else e.g. validation's."""
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [line for line in lines if key in line]


def test_the_adapter_starts_as_the_base_and_the_ip_adapter(parts):
    base = SDBase(parts["inpaint"])
    adapter = _task(parts).build_model()
    ip = load_file(str(parts["ip"]))
    # the ControlNet is the base UNet's encoder copied, its outputs zero: training starts at the zero-shot model
    # the inpainting UNet takes 9 channels; its ControlNet only the 4 of the noisy latents, as the pipeline feeds it
    torch.testing.assert_close(adapter.controlnet.conv_in.weight, base.unet.conv_in.weight[:, :4], rtol=0, atol=0)
    assert all(not b.weight.detach().any() for b in adapter.controlnet.controlnet_down_blocks)
    for proj in (adapter.person_proj, adapter.object_proj):
        torch.testing.assert_close(proj.image_embeds.weight, ip["image_proj.proj.weight"], rtol=0, atol=0)
    last = adapter.ip_layers[-1]
    for role in (0, 1):  # the original file numbers cross-attentions 1, 3, 5, ...
        expected = ip[f"ip_adapter.{2 * len(adapter.ip_layers) - 1}.to_v_ip.weight"]
        torch.testing.assert_close(last.to_v_ip[role].weight, expected, rtol=0, atol=0)


def test_each_reference_acts_only_inside_its_own_role_region(parts):
    """Per-sample role masks: sample 0 has the person on the left, sample 1 on the right. Another
    person's embedding changes the first decoupled cross-attention's output only in each sample's
    person half (the bicubic mask downsampling blurs the two columns next to the border)."""
    task = _task(parts, kind="plain")
    torch.manual_seed(0)
    adapter = task.build_model()
    task.place(adapter, torch.device("cpu"), torch.float32)
    left = torch.zeros(32, 32)
    left[:, :16] = 1
    masks = torch.stack([torch.stack([left, 1 - left]), torch.stack([1 - left, left])])  # (2, 2, 32, 32)
    sample, t = torch.randn(2, 4, 16, 16), torch.tensor([500, 500])
    text = task.base.text_encoder(task.empty_ids.repeat(2, 1))[0]
    embeds = torch.randn(2, 2, task.base.image_encoder.config.projection_dim)
    other = embeds.clone()
    other[:, 0] = torch.randn(2, embeds.shape[-1])  # another person, the same object
    first = adapter.config.ip_layer_names[0].removesuffix(".processor")
    outputs = []
    hook = task.base.unet.get_submodule(first).register_forward_hook(lambda m, i, out: outputs.append(out))
    with torch.no_grad():
        for e in (embeds, other):
            adapter(sample, t, text, e, torch.zeros(2, 6, 32, 32), masks)
    hook.remove()
    side = int(outputs[0].shape[1] ** 0.5)
    change = (outputs[1] - outputs[0]).abs().mean(-1).view(2, side, side)  # (2, h, w) at that layer
    half = side // 2
    person = torch.stack([change[0, :, : half - 1], change[1, :, half + 1 :]])
    objects = torch.stack([change[0, :, half + 1 :], change[1, :, : half - 1]])
    assert float(person.min()) > 0 and float(objects.max()) < 1e-6 * float(person.mean())


def test_the_accelerate_configs_parse():
    from accelerate.commands.config.config_args import load_config_from_file

    folder = Path(__file__).parents[1] / "examples" / "accelerate"
    kinds = {f.stem: load_config_from_file(str(f)) for f in folder.glob("*.yaml")}
    assert {k: c.distributed_type.value for k, c in kinds.items()} == {
        "ddp": "MULTI_GPU", "deepspeed_zero2": "DEEPSPEED", "fsdp": "FSDP"}  # fmt: skip
    assert kinds["deepspeed_zero2"].deepspeed_config["zero_stage"] == 2
    assert kinds["fsdp"].fsdp_config["fsdp_use_orig_params"] is True
    assert all(c.mixed_precision == "bf16" and c.num_processes == 8 for c in kinds.values())


def test_an_untrained_adapter_generates_what_zero_shot_choi_sd_does(parts, tmp_path):
    """Zero ControlNet outputs and both roles as the IP-Adapter: the trained-model path (ControlNet
    inpainting pipeline, trained processors) starts exactly at the zero-shot model with scales 1."""
    from choi.pipelines.choi import CHOIPipeline

    task = _task(parts)
    untrained_and_zero_shot(task, parts["inpaint"], tmp_path)
    masks = layout(32, 32)
    request = dict(human=EXAMPLES / "kick_ball_human.png", object=EXAMPLES / "ride_bicycle_object.png",
                   interaction="ride bicycle", mask=masks, seed=0, steps=2, guidance=1.0)  # fmt: skip
    images = [CHOIPipeline.from_pretrained(tmp_path / name)(**request).images[0] for name in ("zero-shot", "run-model")]
    diff = abs(images[0].astype(int) - images[1].astype(int))
    assert diff.max() <= 1, (diff.max(), diff.mean())


def test_a_few_steps_save_only_the_trainable_weights(parts, tmp_path):
    run = tmp_path / "run"
    final = train(_task(parts), FAST, run)
    losses = [line["loss"] for line in _log(run)]
    assert len(losses) == FAST.steps and all(math.isfinite(x) for x in losses)
    saved = load_file(str(run / "checkpoint" / "model" / WEIGHTS))
    ema = load_file(str(run / "checkpoint" / "ema" / WEIGHTS))
    assert saved.keys() == load_file(str(final / WEIGHTS)).keys() == ema.keys()
    frozen = sorted(k for k in saved if not k.startswith(TRAINABLE))
    assert saved and not frozen, frozen
    state = torch.load(run / "checkpoint" / "training_state.pt", weights_only=False)
    assert len(state["optimizer"]["state"]) == len(saved)  # every trainable tensor, nothing frozen
    assert len(state["ema"]["shadow_params"]) == len(saved)
    adapter = SDAdapter.from_pretrained(final)
    assert adapter.state_dict().keys() == saved.keys() and all(v.dtype == torch.float32 for v in saved.values())


def test_a_killed_run_resumes_to_the_same_weights(parts, tmp_path):
    straight = train(_task(parts), FAST, tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        train(_task(parts, task_cls=killed_after(SDImageTask)), FAST, tmp_path / "b")
    assert (tmp_path / "b/checkpoint/training_state.pt").exists()
    resumed = train(_task(parts), FAST, tmp_path / "b", resume=True)
    a, b = load_file(str(straight / WEIGHTS)), load_file(str(resumed / WEIGHTS))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    after = [line["loss"] for line in _log(tmp_path / "b")][-2:]  # steps 3 and 4, from the checkpoint of step 2
    assert [line["loss"] for line in _log(tmp_path / "a")][2:] == after


@pytest.mark.usefixtures("fresh_accelerate_state")
def test_bf16_gradient_checkpointing_and_accumulation_run(parts, tmp_path):
    task = _task(parts, kind="plain")
    cfg = TrainConfig(**{**FAST.__dict__, "steps": 2, "mixed_precision": "bf16", "gradient_checkpointing": True,
                         "grad_accum": 2})  # fmt: skip
    final = train(task, cfg, tmp_path / "run")
    assert all(math.isfinite(line["loss"]) for line in _log(tmp_path / "run"))
    assert task.base.unet.dtype == torch.bfloat16 and task.base.unet.is_gradient_checkpointing
    assert all(v.dtype == torch.float32 for v in load_file(str(final / WEIGHTS)).values())  # trainables stay fp32


@pytest.mark.parametrize("dropped", [False, True])
def test_every_trainable_parameter_gets_a_gradient_even_with_every_condition_dropped(parts, dropped):
    p = 1.0 if dropped else 0.0
    task = _task(parts, p_drop_text=p, p_drop_human=p, p_drop_object=p, p_drop_background=p, lora_rank=2)
    torch.manual_seed(0)
    model = task.build_model()
    task.place(model, torch.device("cpu"), torch.float32)
    batch = next(iter(task.batches(0)))
    loss, _ = task.loss(model, batch)
    loss.backward()
    missing = [name for name, param in model.named_parameters() if param.grad is None]
    assert not missing, missing[:5]
    assert any(name.startswith("lora.") for name, _ in model.named_parameters())
    assert all(param.grad is None for param in task.base.unet.parameters() if not param.requires_grad)


def test_the_cli_trains_choi_sd(parts, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "image", "--family", "sd", "--model", str(parts["inpaint"]), "--data", str(parts["data"]),
            "--out", str(out), "--resolution", "32", "--steps", "2", "--batch-size", "2", "--workers", "0",
            "--lora-rank", "2"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["lr"] == 1e-5 and config["task"]["data"]["resolution"] == 32
    assert (out / "model" / WEIGHTS).is_file()
    # the run's model folder generates through the trained stage 2
    index = json.loads((out / "model" / "model_index.json").read_text())
    assert index["family"] == "choi-sd" and index["components"]["adapter"] == "."
    images = tmp_path / "images"
    code = main(["generate", "--model", str(out / "model"), "--human", str(EXAMPLES / "kick_ball_human.png"),
                 "--object", str(EXAMPLES / "ride_bicycle_object.png"), "--interaction", "riding a bicycle",
                 "--seed", "0", "--steps", "2", "--set", "layout_candidates=1", "--out", str(images)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    record = json.loads((images / "choi.json").read_text())
    assert record["stage2"]["model"]["adapter"] == str((out / "model").resolve())
    assert (images / "image_0.png").is_file()


def test_a_second_run_starts_from_the_first_runs_adapter(parts, tmp_path):
    first = train(_task(parts), FAST, tmp_path / "first")
    task = _task(parts)
    write_model_index(first, task)
    second = SDImageTask(SDImageTrainConfig(data=str(parts["data"]), model=str(first), resolution=32, num_workers=0))
    start = second.build_model().state_dict()
    for key, value in load_file(str(first / WEIGHTS)).items():
        torch.testing.assert_close(start[key], value, rtol=0, atol=0)
    with pytest.raises(ChoiError, match="--lora-rank 2: the adapter .* was trained with --lora-rank 0"):
        SDImageTask(SDImageTrainConfig(data=str(parts["data"]), model=str(first), lora_rank=2)).build_model()


def test_lora_trains_saves_and_loads(parts, tmp_path):
    from peft.tuners.lora import LoraLayer

    from choi.pipelines.sd.loading import load_inpaint_pipeline

    task = _task(parts, lora_rank=2)
    final = train(task, FAST, tmp_path / "run")
    saved = load_file(str(final / WEIGHTS))
    lora = {k: v for k, v in saved.items() if k.startswith("lora.")}
    state = torch.load(tmp_path / "run" / "checkpoint" / "training_state.pt", weights_only=False)
    assert len(state["optimizer"]["state"]) == len(saved)  # LoRA and the rest: peft froze nothing of ours
    adapter = SDAdapter.from_pretrained(final)
    targets = adapter.config.lora_targets
    assert len(lora) == 2 * len(targets) == 2 * 4 * 2 * len(adapter.ip_layers)  # q, k, v, out of attn1 and attn2
    assert all(float(v.abs().max()) > 0 for k, v in lora.items() if k.endswith(".1.weight"))  # B left zero: trained
    b = task.base
    write_model_index(final, task)
    pipe = load_inpaint_pipeline(b.base, b.ip_adapter, b.image_encoder_path, torch.float32, final)
    layer = pipe.unet.get_submodule(targets[-1])
    assert isinstance(layer, LoraLayer)
    torch.testing.assert_close(layer.lora_B["default"].weight, lora[f"lora.{len(targets) - 1}.1.weight"])
    sample, t, text = torch.randn(1, 9, 16, 16), torch.tensor([500]), torch.randn(1, 77, 32)
    embeds = [torch.randn(1, 1, adapter.config.image_embed_dim)] * 2
    outputs = []
    for enabled in (True, False):  # the loaded LoRA is what the UNet runs
        for module in pipe.unet.modules():
            module.enable_adapters(enabled) if isinstance(module, LoraLayer) else None
        with torch.no_grad():
            outputs.append(pipe.unet(sample, t, text, added_cond_kwargs={"image_embeds": embeds}).sample)
    assert not torch.equal(*outputs)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--model": None}, "--family sd needs --model"),
        ({"--resolution": "30"}, "--resolution must be a multiple of 4"),
        ({"--config": "small"}, "--config: not available with --family sd"),
        ({"--model": "data"}, "expected a choi-sd model folder"),
        ({"--validate-samples": "-1"}, "--validate-samples must be a whole number in [0, 64], got -1"),
        ({"--validate-every": "-2"}, "--validate-every must be a whole number of steps, 0 or more, got -2"),
        ({"--family": "tiny", "--validate-steps": "2"}, "--validate-steps: only with --family sd"),
    ],
)
def test_the_cli_refuses_wrong_sd_options_in_one_line(parts, tmp_path, capsys, change, message):
    args = {"--family": "sd", "--model": str(parts["inpaint"]), "--data": str(parts["data"]),
            "--out": str(tmp_path / "r"), "--resolution": "32"}  # fmt: skip
    args.update({k: str(parts.get(v, v)) if v else v for k, v in change.items()})
    code = main(["train", "image", *[x for k, v in args.items() if v is not None for x in (k, v)]])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("choi: error: ") and err.count("\n") == 1, err
    assert message in err


TWO_RANKS = """
import json, os, sys
import torch
from choi.training.loop import TrainConfig, train
from choi.training.sd import SDImageTask, SDImageTrainConfig

data, model, record, run, crash_at = sys.argv[1:6]

class Recording(SDImageTask):
    calls = 0

    def loss(self, model, batch):  # what this rank sees and holds at every micro-step
        Recording.calls += 1
        if Recording.calls == int(crash_at) and os.environ["RANK"] == "1":
            raise SystemExit("killed")  # one rank dies; torchrun stops the other
        weights = sum(float(p.detach().double().sum()) for p in model.parameters())
        with open(record + f"/rank{os.environ['RANK']}.jsonl", "a") as f:
            f.write(json.dumps({"weights": weights, "batch": float(batch["image"].double().sum())}) + "\\n")
        return super().loss(model, batch)

cfg = SDImageTrainConfig(data=data, model=model, resolution=32, batch_size=2, num_workers=0, val_steps=2)
train(Recording(cfg), TrainConfig(steps=3, batch_size=2, lr=1e-3, warmup_steps=1, checkpoint_every=2, log_every=1,
                                  mixed_precision="no"), run, resume=crash_at == "-1")
torch.distributed.destroy_process_group()  # as `choi` does on success (choi.cli.run): transformers' loading
sys.stdout.flush(), sys.stderr.flush()     # keeps the group alive, and gloo's threads can abort the exit
os._exit(0)
"""


def _two_ranks(parts, tmp_path: Path, run: Path, record: Path, crash_at: int) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=2`` of TWO_RANKS; ``crash_at``: rank 1 dies at that loss call, -1: resume."""
    script = tmp_path / "two_ranks.py"
    script.write_text(TWO_RANKS)
    record.mkdir(exist_ok=True)
    paths = [str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")]
    # no ACCELERATE_USE_CPU: the loop itself must make the two CPU processes one run
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(paths)}
    env.pop("ACCELERATE_USE_CPU", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           str(parts["data"]), str(parts["inpaint"]), str(record), str(run), str(crash_at)]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


def test_two_processes_see_different_samples_hold_the_same_weights_and_resume_exactly(parts, tmp_path):
    run = tmp_path / "run"
    done = _two_ranks(parts, tmp_path, run, tmp_path / "straight", crash_at=0)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [
        [json.loads(x) for x in (tmp_path / "straight" / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)
    ]
    assert len(ranks[0]) == len(ranks[1]) == 3
    for a, b in zip(*ranks, strict=True):
        assert a["batch"] != b["batch"]  # each rank its own samples
        assert a["weights"] == b["weights"]  # and, step after step, the same weights
    assert len({step["weights"] for step in ranks[0]}) == 3  # which do train
    assert [line["step"] for line in _log(run)] == [1, 2, 3]  # one process logs
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint", "config.json", "log.jsonl", "model", "validation"]
    assert [line["step"] for line in _log(run, "val/psnr_person")] == [3]  # validated once, by the main process

    killed = tmp_path / "killed"
    assert _two_ranks(parts, tmp_path, killed, tmp_path / "k", crash_at=3).returncode != 0  # after step 2's checkpoint
    done = _two_ranks(parts, tmp_path, killed, tmp_path / "k", crash_at=-1)
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = load_file(str(run / "model" / WEIGHTS)), load_file(str(killed / "model" / WEIGHTS))
    for k in a:  # every process's noise restored: the same weights as the uninterrupted run
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
