"""Does choi-sd's stage-2 training learn, not just run? A check on colour-blob identities (tests/fake_samples.py).

``write_parts`` writes tiny random SD parts (tests/sd_components.py; plain base, a VAE with a narrow
posterior and unit-size latents) and the 8 :func:`~fake_samples.blob_samples`; ``learning_run``
trains the real task through the one loop; ``reference_loss_gap`` is the trained adapter's loss
with each role's reference swapped for another colour's; ``swap_effects`` generates through the
real pipeline (``CHOIPipeline.from_pretrained(RUN/model)``, the sample's own layout, which skips
stage 1) each sample with its own references, with the person's swapped and with the object's
swapped, and measures where the image changed and which way each region's colour moved.

The identities are solid colours and the parts random: not real identity learning.
Used by tests/test_sd_learning.py (short) and benchmarks/bench_sd_learning.py (full).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import binary_erosion

from choi.pipelines.sd import make_model_folder
from choi.training.loop import TrainConfig, train
from choi.training.sd import SDImageTask, SDImageTrainConfig, write_model_index
from fake_samples import PALETTE, blob_reference, blob_samples, paint_blobs, write_blob_dataset
from sd_components import write_ip_adapter, write_sd_folder

RESOLUTION = 32  # the tiny VAE halves it: 16 x 16 latents, 8 x 8 at the UNet's attention layers
POSTERIOR_STD = 0.01  # a trained VAE's narrow posterior (a random one's is ~0.9)
SCALING_FACTOR = 3.0  # ~1 / the std (0.30) of this random VAE's latent means on the blob images
GENERATE = dict(steps=10, guidance=1.0, seed=0)  # no CFG: the references' effect alone


def write_parts(root: Path) -> tuple[Path, Path]:
    """Tiny SD parts (plain base, calibrated VAE), a choi-sd model folder and the blob dataset in ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    base = write_sd_folder(root / "sd", inpainting=False, posterior_std=POSTERIOR_STD, scaling_factor=SCALING_FACTOR)
    model = make_model_folder(root / "model", base, write_ip_adapter(root / "ip"), resolution=RESOLUTION)
    (root / "data").mkdir(exist_ok=True)
    return model, write_blob_dataset(root / "data", resolution=RESOLUTION)


def _task(model: Path, data: Path, batch: int = 8, seed: int = 0, **options) -> SDImageTask:
    cfg = SDImageTrainConfig(data=str(data), model=str(model), resolution=RESOLUTION, batch_size=batch, num_workers=0,
                             seed=seed, val_samples=0, **options)  # fmt: skip
    return SDImageTask(cfg)


def untrained_model(model: Path, data: Path, out: Path) -> Path:
    """The adapter as training starts it (ControlNet zero, both roles the IP-Adapter) as a run's model folder."""
    task = _task(model, data)
    torch.manual_seed(0)
    task.build_model().save_pretrained(out)
    return write_model_index(out, task)


def learning_run(
    model: Path, data: Path, run: Path, steps: int, lr: float, batch: int = 8, seed: int = 0
) -> tuple[Path, list[float]]:
    """Train on the blob samples; returns (RUN/model, the loss of every step)."""
    train_cfg = TrainConfig(steps=steps, batch_size=batch, lr=lr, warmup_steps=min(20, steps // 10 + 1),
                            checkpoint_every=10**9, log_every=1, seed=seed, mixed_precision="no")  # fmt: skip
    task = _task(model, data, batch, seed)
    final = write_model_index(train(task, train_cfg, run), task)
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return final, [line["loss"] for line in lines if "loss" in line]


def _swap_colours(p: int, o: int) -> tuple[int, int]:
    """The colours a sample's person and object references are swapped for: seen in training, not in it."""
    new_p, new_o = [c for c in range(len(PALETTE)) if c not in (p, o)][:2]
    return new_p, new_o


def reference_loss_gap(run_model: Path, data: Path, draws: int = 16) -> dict[str, float]:
    """The training loss of the trained adapter on the blob samples (no condition dropout; the same
    timesteps and noise, ``draws`` of them) with their own references and with the person's or the
    object's swapped: how much each role's reference tells the model about its target."""
    from dataclasses import replace

    task = _task(run_model, data, p_drop_text=0, p_drop_human=0, p_drop_object=0, p_drop_background=0)
    adapter = task.build_model().eval()
    task.place(adapter, torch.device("cpu"), torch.float32)
    samples = blob_samples(resolution=RESOLUTION)
    swaps = [_swap_colours(s.human_id, s.object_id) for s in samples]
    refs = [blob_reference(PALETTE[c], RESOLUTION) for c in range(len(PALETTE))]
    pairs = list(zip(samples, swaps, strict=True))
    variants = {
        "own": samples,
        "person_swapped": [replace(s, human_ref=refs[c][0], human_ref_mask=refs[c][1]) for s, (c, _) in pairs],
        "object_swapped": [replace(s, object_ref=refs[c][0], object_ref_mask=refs[c][1]) for s, (_, c) in pairs],
    }
    out = {}
    with torch.no_grad():
        for name, batch in variants.items():
            collated = task.collate(batch)
            losses = []
            for k in range(draws):
                torch.manual_seed(k)
                losses.append(float(task.loss(adapter, collated)[0]))
            out[name] = round(float(np.mean(losses)), 5)
    return out


def loss_drop(losses: list[float], n: int) -> float:
    """Mean of the first ``n`` losses over the mean of the last ``n``."""
    return float(np.mean(losses[:n]) / np.mean(losses[-n:]))


def _core(mask: np.ndarray) -> np.ndarray:
    """The region less its 1-px rim (the role masks reach the attention layers blurred at the border)."""
    return binary_erosion(mask, iterations=1)


def swap_effects(model: Path, samples: int = 8) -> dict[str, float]:
    """Generate each of the first ``samples`` blob samples three times (own references, person swapped,
    object swapped; the same seed) and return the mean over samples of:

    - ``person_swap_person`` / ``person_swap_object``: mean absolute change (0-255) inside the person's
      and the object's region when the person's reference is swapped; ``object_swap_*`` likewise;
    - ``person_colour_cos`` / ``object_colour_cos``: the cosine between how the swapped region's mean
      colour (RGB) moved and how its target's did (targets: the blob images through the VAE, as the
      model sees its training targets): 1 is straight toward the new colour, 0 unrelated.
    """
    from choi.pipelines.choi import CHOIPipeline

    pipe = CHOIPipeline.from_pretrained(model)
    vae = pipe.image_stage.pipe.vae
    options = {"prompt": "{interaction}", "negative_prompt": "", "mask_grow": 1, "crop_context": "none",
               "layout_candidates": 1}  # fmt: skip
    sums: dict[str, list[float]] = {}

    def target(human, obj, hc, oc) -> np.ndarray:  # the painted blobs as decoded from their latents
        x = torch.from_numpy(paint_blobs(human, obj, hc, oc)).permute(2, 0, 1)[None].float() / 127.5 - 1
        with torch.no_grad():
            y = vae.decode(vae.encode(x).latent_dist.mode()).sample[0]
        return ((y.permute(1, 2, 0).numpy() + 1) * 127.5).clip(0, 255)

    for s in blob_samples(samples, RESOLUTION):
        p, o = s.human_id, s.object_id
        new_p, new_o = _swap_colours(p, o)

        def generate(hc: int, oc: int, s=s) -> np.ndarray:
            (h_rgb, h_sil), (o_rgb, o_sil) = (blob_reference(PALETTE[c], RESOLUTION) for c in (hc, oc))
            layout = (s.human_mask, s.object_mask)
            out = pipe(human=h_rgb, human_mask=h_sil, object=o_rgb, object_mask=o_sil, interaction=s.text,
                       background=s.background, mask=layout, options=options, **GENERATE)  # fmt: skip
            return out.images[0].astype(float)

        own, person_swapped, object_swapped = generate(p, o), generate(new_p, o), generate(p, new_o)
        hm, om = _core(s.human_mask), _core(s.object_mask)
        for name, image in (("person_swap", person_swapped), ("object_swap", object_swapped)):
            change = np.abs(image - own).mean(-1)
            sums.setdefault(f"{name}_person", []).append(float(change[hm].mean()))
            sums.setdefault(f"{name}_object", []).append(float(change[om].mean()))
        before = target(s.human_mask, s.object_mask, PALETTE[p], PALETTE[o])
        for name, image, region, after in (
            ("person", person_swapped, hm, target(s.human_mask, s.object_mask, PALETTE[new_p], PALETTE[o])),
            ("object", object_swapped, om, target(s.human_mask, s.object_mask, PALETTE[p], PALETTE[new_o])),
        ):
            moved = image[region].mean(0) - own[region].mean(0)  # the region's mean colour: how it moved
            wanted = after[region].mean(0) - before[region].mean(0)  # and how its target's moved
            cos = float(moved @ wanted / (np.linalg.norm(moved) * np.linalg.norm(wanted) + 1e-9))
            sums.setdefault(f"{name}_colour_cos", []).append(cos)
    return {k: round(float(np.mean(v)), 4) for k, v in sums.items()}
