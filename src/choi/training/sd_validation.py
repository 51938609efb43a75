"""Validation of choi-sd's stage-2 training: a few held-out samples through the real stage 2, during the run.

The loop (:func:`choi.training.loop.train`) calls :meth:`~choi.training.sd.SDImageTask.validate` on the
main process only, every ``--validate-every`` steps and at the end, with the adapter holding its
EMA weights, in eval mode and under ``torch.no_grad``. Here the adapter and the task's frozen parts
(already on the device, in the mixed-precision dtype) become diffusers' stock
``StableDiffusionControlNetInpaintPipeline`` (``StableDiffusionInpaintPipeline`` with ``--layout inpaint``) inside
:class:`~choi.pipelines.sd.stages.SDImageStage`,
the stage 2 that ``choi generate --model RUN/model`` runs, wired as ``load_inpaint_pipeline`` wires
a trained adapter, without writing a model folder. Nothing is copied: generation runs on the very
weights being trained.

Per sample (the first ``val_samples`` of the test split, else of the train split, with non-empty
references and masks): the sample's own person and object masks are the layout (stage 2 alone:
validation does not depend on stage 1), its background when it has one, its own sentence as the
prompt and the empty negative prompt (what training drops text to), IP scales 1 (trained at 1),
seed ``seed + i``. The global RNG is saved and restored around it, so a run with validation trains
exactly the weights of one without.

Output: ``RUN/validation/step_NNNNNNN.png``, one row per sample: person reference | object
reference (both cut out on white, as the image encoder sees them) | layout (person red, object
blue, over the dimmed background) | generated | ground truth; and the metrics the loop logs as
``val/...`` in ``RUN/log.jsonl``: PSNR to the ground truth inside the person's and the object's
masks, and the mean absolute error inside both (choi-tiny's ``mae_in_masks``, on 0-255).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from choi.data.schema import Sample
from choi.data.shards import iter_samples
from choi.errors import ChoiError
from choi.models.sd_adapter import SDAdapter
from choi.pipelines.inputs import mask_preview
from choi.pipelines.sd.stages import SDImageStage, SDOptions, reference_image
from choi.pipelines.stages import Layouts, StageInputs
from choi.training.diffusion import DiffusionTask, validation_split

if TYPE_CHECKING:
    from choi.training.sd import SDImageTask

# what training conditions on: the sample's sentence as the whole prompt, "" as the dropped text, scales 1
TRAINED_OPTIONS = SDOptions(prompt="{interaction}", negative_prompt="", ip_scale_human=1.0, ip_scale_object=1.0)
PSNR_CAP = 100.0  # dB, for a region reproduced exactly


def check_validation(every: int, samples: int, steps: int) -> None:
    """``--validate-every`` (0: only at the end), ``--validate-samples`` (0: no validation) and
    ``--validate-steps``, or a one-line ChoiError."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
        raise ChoiError(f"--validate-every must be a whole number of steps, 0 or more, got {every}")
    if isinstance(samples, bool) or not isinstance(samples, int) or not 0 <= samples <= 64:
        raise ChoiError(f"--validate-samples must be a whole number in [0, 64], got {samples}")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 1000:
        raise ChoiError(f"--validate-steps must be a whole number in [1, 1000], got {steps}")


def validation_samples(data: str | Path, count: int) -> list[Sample]:
    """The first ``count`` samples of the validation split whose references and masks are all non-empty
    (an empty reference cannot be cut out, an empty mask has no score): the same ones at every step and
    in every run on ``data``."""
    if count <= 0:
        return []
    samples = iter_samples(data, split=validation_split(data))
    usable = (s for s in samples if s.human_ref_mask.any() and s.object_ref_mask.any() and s.human_mask.any()
              and s.object_mask.any())  # fmt: skip
    return list(itertools.islice(usable, count))


def validation_stage(task: SDImageTask, adapter: SDAdapter) -> SDImageStage:
    """choi-sd's stage 2 on the task's frozen parts and ``adapter``'s ControlNet (in place, nothing copied).

    The UNet already runs the adapter's attention processors (``place`` attached them); the role
    projections enter it only for the duration of :func:`_roles_in_unet`.
    """
    from diffusers import StableDiffusionControlNetInpaintPipeline, StableDiffusionInpaintPipeline

    b = task.base
    parts = {"vae": b.vae, "text_encoder": b.text_encoder, "tokenizer": b.tokenizer, "unet": b.unet,
             "scheduler": b.noise, "safety_checker": None, "feature_extractor": b.processor,
             "image_encoder": b.image_encoder, "requires_safety_checker": False}  # fmt: skip
    if adapter.controlnet is None:  # layout="inpaint": its layout channels are in the UNet's conv_in (place)
        pipe = StableDiffusionInpaintPipeline(**parts)
    else:
        pipe = StableDiffusionControlNetInpaintPipeline(controlnet=adapter.controlnet, **parts)
    pipe.choi_adapter = adapter  # what makes SDImageStage run the trained layout branch and roles
    pipe.set_progress_bar_config(disable=True)
    sources = {"id": f"{task.name}@validation", "base": str(b.base), "ip_adapter": str(b.ip_adapter)}
    return SDImageStage(pipe, task.cfg.resolution, b.multiple, sources)


@contextmanager
def _roles_in_unet(unet: torch.nn.Module, adapter: SDAdapter) -> Iterator[None]:
    """The UNet projects the two reference embeddings with ``adapter``'s person and object projections,
    as the loaded trained pipeline does (diffusers' IP-Adapter wiring); everything put back afterwards."""
    from diffusers.models.embeddings import MultiIPAdapterImageProjection

    saved = unet.encoder_hid_proj, unet.config.encoder_hid_dim_type, [layer.scale for layer in adapter.ip_layers]
    unet.encoder_hid_proj = MultiIPAdapterImageProjection([adapter.person_proj, adapter.object_proj])
    unet.config.encoder_hid_dim_type = "ip_image_proj"  # as diffusers' own IP-Adapter loader sets it
    try:
        yield
    finally:
        unet.encoder_hid_proj, unet.config.encoder_hid_dim_type = saved[0], saved[1]
        for layer, scale in zip(adapter.ip_layers, saved[2], strict=True):
            layer.scale = scale


@contextmanager
def _isolated(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """The global RNG (CPU, and this CUDA device's) restored afterwards; autocast to ``dtype`` when the frozen
    parts are in low precision (the adapter stays fp32, as in training)."""
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), torch.autocast(device.type, dtype, enabled=dtype != torch.float32):
        yield


def psnr(image: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """PSNR in dB of ``image`` to ``target`` (uint8) over the pixels of ``mask`` (capped at :data:`PSNR_CAP`)."""
    mse = float(((image.astype(np.float64) - target) ** 2)[mask].mean()) / 255**2
    return PSNR_CAP if mse <= 10 ** (-PSNR_CAP / 10) else 10 * math.log10(1 / mse)


def _fit(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    if rgb.shape[:2] == (height, width):
        return rgb
    return np.asarray(Image.fromarray(rgb).convert("RGB").resize((width, height), Image.BICUBIC))


def validate_sd(task: SDImageTask, adapter: SDAdapter, out_dir: Path, step: int) -> dict[str, float]:
    """Generate the validation samples with the adapter's current weights; write the grid, return the metrics."""
    cfg = task.cfg
    samples = validation_samples(cfg.data, cfg.val_samples)
    if not samples:
        return {}
    stage = validation_stage(task, adapter)
    unet = task.base.unet
    cell = samples[0].image.shape[:2]  # every grid cell at the first sample's size
    rows, scores = [], {"psnr_person": [], "psnr_object": [], "mae_in_masks": []}
    with _isolated(unet.device, unet.dtype), _roles_in_unet(unet, adapter):
        for i, s in enumerate(samples):
            h, w = s.image.shape[:2]
            inputs = StageInputs(s.human_ref, s.human_ref_mask, s.object_ref, s.object_ref_mask, s.text,
                                 [cfg.seed + i], h, w, s.background)  # fmt: skip
            layouts = Layouts(s.human_mask[None], s.object_mask[None])
            image = stage(inputs, layouts, cfg.val_steps, cfg.val_guidance, TRAINED_OPTIONS, None)[0][0]
            scores["psnr_person"].append(psnr(image, s.image, s.human_mask))  # both non-empty: validation_samples
            scores["psnr_object"].append(psnr(image, s.image, s.object_mask))
            inside = s.human_mask | s.object_mask
            scores["mae_in_masks"].append(float(np.abs(image.astype(np.float32) - s.image)[inside].mean()))
            refs = [np.asarray(reference_image(rgb, sil))
                    for rgb, sil in ((s.human_ref, s.human_ref_mask), (s.object_ref, s.object_ref_mask))]  # fmt: skip
            layout = mask_preview(s.human_mask, s.object_mask, s.background)
            rows.append(np.concatenate([_fit(part, *cell) for part in (*refs, layout, image, s.image)], 1))
    DiffusionTask._write_grid(out_dir, step, rows)
    return {k: float(np.mean(v)) for k, v in scores.items()}
