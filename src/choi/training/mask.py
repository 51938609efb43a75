"""Training recipe for the stage-1 mask generator (a Task for :func:`choi.training.loop.train`).

v-prediction on a cosine DDPM schedule, masks as values in [-1, 1] (area-downsampled, so edges are
soft), every condition dropped independently at random (text, references, box, background) so
that one model serves every combination of user inputs and classifier-free guidance.
Validation writes ``RUN/validation/step_NNNNNNN.png``: per test sample, ground truth | generated
with box and background | generated from references and text alone.

Example:
    >>> train_mask("data/hoiw", "runs/mask", config="tiny", steps=3000, batch_size=32)
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from choi.data.batch import image_tensor, mask_tensor
from choi.data.schema import Sample
from choi.errors import ChoiError
from choi.evaluation.metrics import box_iou, union_box_from_masks
from choi.models.conditioning import box_in_window, crop_windows, zoom_window
from choi.models.mask_generator import MaskConditions, MaskGenerator
from choi.pipelines.inputs import mask_preview
from choi.pipelines.tiny.mask import DEFAULT_GUIDANCE, DEFAULT_STEPS, MaskPipeline
from choi.training.diffusion import (
    DiffusionTask,
    StageTrainConfig,
    batch_text,
    check_fraction,
    diffusion_loss,
    flip_halves,
    text_variants,
    train_stage,
)
from choi.vocabulary import label_index

log = logging.getLogger(__name__)


@dataclass
class MaskTrainConfig(StageTrainConfig):
    # Text and references are what the mask is *about*: drop them rarely, just enough for CFG.
    p_drop_text: float = 0.1
    p_drop_refs: float = 0.1
    # Box and background are optional for users, so the model sees each absent half the time.
    p_drop_box: float = 0.5
    p_drop_background: float = 0.5
    val_steps: int = DEFAULT_STEPS
    val_guidance: float = DEFAULT_GUIDANCE
    # Samples cut to a zoom window around their union box (zoom_rows), so that one model also draws
    # a layout in more detail when the pipeline zooms; see docs/experiments.md#zoom.
    p_zoom: float = 0.0
    zoom_margins: tuple[float, float] = (0.1, 0.3)  # each zoomed sample's window margin, uniform in this range
    # The side the masks are drawn at, instead of the preset's. The network is convolutional, so a model
    # saved at one side can be fine-tuned at another (--init-from); see docs/experiments.md#mask-96.
    sample_size: int | None = None


def mask_collate(samples: Sequence[Sample], size: int, full: bool = False) -> dict[str, Any]:
    """Only what the mask model reads; target masks and the background already at model size
    (with ``full``, also at the samples' own size, as ``full_masks`` and ``full_background``)."""
    masks = mask_tensor([s.human_mask for s in samples], [s.object_mask for s in samples])
    background = image_tensor([s.background if s.background is not None else np.zeros_like(s.image) for s in samples])
    extra = {"full_masks": masks, "full_background": background} if full else {}
    return {
        **extra,
        "masks": F.interpolate(masks, size=(size, size), mode="area"),  # (N, 2, S, S) in [0, 1]
        "ref_masks": mask_tensor([s.human_ref_mask for s in samples], [s.object_ref_mask for s in samples]),
        "union_box": torch.tensor([s.union_box for s in samples], dtype=torch.float32),
        "background": F.interpolate(background, size=(size, size), mode="bilinear", antialias=True),
        "has_background": torch.tensor([s.background is not None for s in samples]),
        "label": torch.tensor([label_index(s.interaction) for s in samples], dtype=torch.long),
        "texts": [text_variants(s) for s in samples],
    }


class MaskTask(DiffusionTask):
    """The mask generator's data, loss and validation for the shared training loop."""

    name = "mask"
    model_cls = MaskGenerator
    config_cls = MaskTrainConfig
    size_option = "--sample-size"  # the option that sets the mask side, in messages
    ref_keys: tuple[str, ...] = ("ref_masks",)  # batch entries that show the references (flipped together)

    def model_overrides(self) -> dict[str, Any]:
        """``zoom`` when trained on zoom windows (its pipeline then zooms on a box), and ``sample_size``."""
        cfg = self.cfg
        overrides: dict[str, Any] = {"zoom": True} if cfg.p_zoom > 0 else {}
        size = cfg.sample_size
        if size is not None:
            patch = MaskGenerator.preset_config(cfg.model)["patch_size"]
            if not (isinstance(size, int) and 16 <= size <= 256 and size % patch == 0):
                bound = f"a multiple of the patch size {patch} in [16, 256]"
                raise ChoiError(f"{self.size_option} must be {bound}, got {size!r}")
            overrides["sample_size"] = size
        return overrides

    def collate_fn(self) -> Callable[[Sequence[Sample]], dict[str, Any]]:
        return functools.partial(mask_collate, size=self.model_config["sample_size"], full=self.cfg.p_zoom > 0)

    def loss(self, model: MaskGenerator, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        if cfg.p_zoom > 0:
            batch = zoom_rows(batch, cfg.p_zoom, cfg.zoom_margins)
        if cfg.flip:
            batch = flip_halves(batch, ("masks", "background"), self.ref_keys)
        x0 = batch["masks"] * 2 - 1  # (N, 2, S, S) in [-1, 1]
        n, device = x0.shape[0], x0.device
        yes = torch.ones(n, dtype=torch.bool, device=device)
        cond = MaskConditions(
            text=batch_text(batch),
            ref_masks=batch["ref_masks"],
            box=batch["union_box"],
            background=batch["background"],
            has_text=yes,
            has_refs=yes,
            has_box=yes,
            has_background=batch["has_background"].bool(),
            ref_embeds=self.identity(batch),
        )

        def drop(p: float) -> torch.Tensor:
            return torch.rand(n, device=device) < p

        cond = cond.dropped(
            text=drop(cfg.p_drop_text),
            refs=drop(cfg.p_drop_refs),
            box=drop(cfg.p_drop_box),
            background=drop(cfg.p_drop_background),
        )
        return diffusion_loss(self.noise, lambda xt, t: model(xt, t, cond), x0, self.loss_weights(batch)), {}

    def identity(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """(N, 2, E) image embeddings of the references for a model with identity tokens; None here (choi-tiny)."""
        return None

    def pipeline(self, model: MaskGenerator, step: int) -> MaskPipeline:
        """The inference pipeline around ``model`` that validation draws with."""
        return MaskPipeline(model, self.text_encoder, model_id=f"{self.name}@{step}")

    def validate(self, model: MaskGenerator, out_dir: Path, step: int) -> dict[str, float]:
        """A PNG grid (ground truth | with box + background | free) and IoU / box adherence metrics."""
        cfg = self.cfg
        pipe = self.pipeline(model, step)
        rows, scores = [], {"human_iou": [], "object_iou": [], "box_iou": []}
        for i, s in enumerate(self._val_samples()):
            h, w = s.resolution
            common = dict(
                human_mask=s.human_ref_mask,
                object_mask=s.object_ref_mask,
                reference_images=(s.human_ref, s.object_ref),  # read by a model with identity tokens only
                interaction=s.text,
                seed=cfg.seed + i,
                num_inference_steps=cfg.val_steps,
                guidance_scale=cfg.val_guidance,
                height=h,
                width=w,
            )
            placed = pipe(background=s.background, box=s.union_box, **common)
            free = pipe(**common)
            hm, om = placed.human_masks[0], placed.object_masks[0]
            scores["human_iou"].append(_iou(hm, s.human_mask))
            scores["object_iou"].append(_iou(om, s.object_mask))
            box_pct = float(box_iou(union_box_from_masks(hm, om), s.union_box))
            scores["box_iou"].append(box_pct / 100)
            gt = mask_preview(s.human_mask, s.object_mask, s.background)
            free_preview = mask_preview(free.human_masks[0], free.object_masks[0])
            rows.append(np.concatenate([gt, placed.preview(0), free_preview], 1))
        if not rows:
            return {}
        self._write_grid(out_dir, step, rows)
        return {k: float(np.mean(v)) for k, v in scores.items()}


def zoom_rows(batch: dict[str, Any], p: float, margins: tuple[float, float]) -> dict[str, Any]:
    """A random fraction ``p`` of the batch cut to a zoom window around its union box (margin drawn
    uniformly from ``margins``): masks and background resampled from ``full_masks`` and
    ``full_background`` to model size, and the box given in the window's coordinates."""
    masks, box = batch["masks"], batch["union_box"]
    n, size, device = masks.shape[0], masks.shape[-1], masks.device
    zoom = torch.rand(n, device=device) < p
    margin = torch.empty(n, device=device).uniform_(*margins)
    window = zoom_window(box, margin)
    out = dict(batch)
    for key, full in (("masks", "full_masks"), ("background", "full_background")):
        cut = crop_windows(batch[full], window, size)
        out[key] = torch.where(zoom[:, None, None, None], cut.to(batch[key].dtype), batch[key])
    out["union_box"] = torch.where(zoom[:, None], box_in_window(box, window), box)
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def train_mask(
    data: str, out: str, config: str = "tiny", steps: int = 3000, batch_size: int = 32, lr: float = 5e-4, **options: Any
) -> Path:
    """Train the mask generator into ``out``; returns ``out/model`` (the EMA weights the pipeline loads).

    ``options`` are :func:`~choi.training.diffusion.train_stage`'s (workers, seed, resume, ...) and
    ``zoom``: the fraction of samples cut to a zoom window around their union box (:func:`zoom_rows`);
    ``sample_size``: the mask side to train at instead of the preset's (None: the preset's).
    """
    zoom = check_fraction("--zoom", options.pop("zoom", 0.0))
    return train_stage(
        MaskTask, data, out, config=config, steps=steps, batch_size=batch_size, lr=lr,
        recipe={"p_zoom": zoom, "sample_size": options.pop("sample_size", None)}, **options,
    )  # fmt: skip
