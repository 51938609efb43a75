"""Training recipe for the stage-2 image generator (a Task for :func:`choi.training.loop.train`).

HOI-World samples are same-pair-different-pose by construction: the references are renders of the
person and the object in another pose and view, the target is the pair interacting. The model
learns to paint *these* identities inside the layout, so it must separate identity from pose.

Per sample, at random: the layout is the human/object masks (two-stage) or only the box
(single-stage, the AnyDoor-like setting the paper compares against), the background is given
(with the region to generate removed) or not, and text, human reference and object reference are
each dropped for classifier-free guidance. The loss weighs the person and object pixels more: the
identities live there, the background is mostly copied.

Example:
    >>> train_image("data/hoiw", "runs/image", config="tiny", steps=6000, batch_size=16)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from choi.data.batch import image_tensor, mask_tensor
from choi.data.schema import Sample
from choi.errors import ChoiError
from choi.models.conditioning import generation_region, layout_region
from choi.models.image_generator import ImageConditions, ImageGenerator
from choi.pipelines.tiny.render import DEFAULT_GUIDANCE, DEFAULT_STEPS
from choi.training.diffusion import (
    DiffusionTask,
    StageTrainConfig,
    batch_text,
    diffusion_loss,
    flip_halves,
    text_variants,
    train_stage,
)
from choi.vocabulary import label_index

log = logging.getLogger(__name__)

PERSON_OBJECT_WEIGHT = 4.0  # loss weight of human/object pixels relative to background pixels


@dataclass
class ImageTrainConfig(StageTrainConfig):
    batch_size: int = 16
    p_drop_text: float = 0.1
    p_drop_human: float = 0.1
    p_drop_object: float = 0.1
    p_box_only: float = 0.25  # single-stage samples: the layout is the box alone
    p_drop_background: float = 0.3
    val_steps: int = DEFAULT_STEPS  # the pipeline's defaults
    val_guidance: float = DEFAULT_GUIDANCE


def image_collate(samples: Sequence[Sample]) -> dict[str, Any]:
    refs = torch.stack([image_tensor([s.human_ref for s in samples]), image_tensor([s.object_ref for s in samples])], 1)
    background = [s.background if s.background is not None else np.zeros_like(s.image) for s in samples]
    return {
        "image": image_tensor([s.image for s in samples]),  # (N, 3, S, S) in [0, 1]
        "masks": mask_tensor([s.human_mask for s in samples], [s.object_mask for s in samples]),
        "refs": refs,  # (N, 2, 3, H, W)
        "ref_masks": mask_tensor([s.human_ref_mask for s in samples], [s.object_ref_mask for s in samples]),
        "union_box": torch.tensor([s.union_box for s in samples], dtype=torch.float32),
        "background": image_tensor(background),
        "has_background": torch.tensor([s.background is not None for s in samples]),
        "label": torch.tensor([label_index(s.interaction) for s in samples], dtype=torch.long),
        "texts": [text_variants(s) for s in samples],
    }


def conditions_from_batch(batch: dict[str, torch.Tensor], box_only: torch.Tensor | None = None) -> ImageConditions:
    """Every condition of a collated batch switched on (the masks layout, with the box).

    The region to paint is the masks' (grown a little), or for ``box_only`` rows the box's.
    """
    size = batch["image"].shape[-1]
    region = layout_region(batch["masks"])
    if box_only is not None:
        region = torch.where(box_only[:, None, None, None], generation_region(batch["union_box"], size), region)
    cond = ImageConditions.build(
        batch_text(batch),
        batch["refs"],
        batch["ref_masks"],
        region=region,
        masks=batch["masks"],
        box=batch["union_box"],
        background=batch["background"],
    )
    return cond.dropped(background=~batch["has_background"].bool())


class ImageTask(DiffusionTask):
    """The image generator's data, loss and validation for the shared training loop."""

    name = "image"
    model_cls = ImageGenerator
    config_cls = ImageTrainConfig

    def start_from(self, model: ImageGenerator, other: ImageGenerator) -> None:
        """Any earlier image model: it may have fewer condition channels or no warp prior."""
        kept = model.load_compatible(other)
        log.info("%d tensors left as initialised: %s", len(kept), ", ".join(kept))

    def collate_fn(self) -> Callable[[Sequence[Sample]], dict[str, Any]]:
        return image_collate

    def loss(self, model: ImageGenerator, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        if cfg.flip:
            batch = flip_halves(batch, ("image", "masks", "background"), ("refs", "ref_masks"))
        size = self.model_config["sample_size"]
        if batch["image"].shape[-1] != size:
            raise ChoiError(
                f"the {cfg.model} image model trains at {size}px; the dataset is {batch['image'].shape[-1]}px"
            )
        n, device = batch["image"].shape[0], batch["image"].device

        def drop(p: float) -> torch.Tensor:
            return torch.rand(n, device=device) < p

        box_only = drop(cfg.p_box_only)
        cond = conditions_from_batch(batch, box_only).dropped(
            text=drop(cfg.p_drop_text),
            human=drop(cfg.p_drop_human),
            object=drop(cfg.p_drop_object),
            masks=box_only,
            box=~box_only,  # two-stage samples carry the masks; the box adds nothing there
            background=drop(cfg.p_drop_background),
        )
        x0 = batch["image"] * 2 - 1
        weight = 1 + (PERSON_OBJECT_WEIGHT - 1) * batch["masks"].amax(1, keepdim=True)
        if (extra := self.loss_weights(batch)) is not None:
            weight = weight * extra
        loss = diffusion_loss(self.noise, lambda xt, t: model(xt, t, cond), x0, weight)
        return loss, {}

    def validate(self, model: ImageGenerator, out_dir: Path, step: int) -> dict[str, float]:
        """A PNG grid (ground truth | two-stage with GT masks | single-stage with the box | no background)
        and the mean absolute error inside the person and object with GT masks."""
        from choi.pipelines.tiny.render import ImageRenderer

        cfg = self.cfg
        render = ImageRenderer(model, self.text_encoder, model_id=f"{self.name}@{step}")
        rows, errors = [], []
        for i, s in enumerate(self._val_samples()):
            refs = (s.human_ref, s.human_ref_mask, s.object_ref, s.object_ref_mask, s.text)
            steps = dict(num_inference_steps=cfg.val_steps, guidance_scale=cfg.val_guidance)
            masks = (s.human_mask[None], s.object_mask[None])

            def seeded(seed: int = cfg.seed + i) -> list[torch.Generator]:
                return [torch.Generator().manual_seed(seed)]

            two = render(*refs, seeded(), layout_masks=masks, background=s.background, **steps)[0]
            one = render(*refs, seeded(), box=s.union_box, background=s.background, **steps)[0]
            free = render(*refs, seeded(), layout_masks=masks, **steps)[0]
            inside = s.human_mask | s.object_mask
            errors.append(float(np.abs(two.astype(np.float32) - s.image)[inside].mean()))
            rows.append(np.concatenate([s.image, two, one, free], 1))
        if not rows:
            return {}
        self._write_grid(out_dir, step, rows)
        return {"mae_in_masks": float(np.mean(errors))}


def train_image(
    data: str, out: str, config: str = "tiny", steps: int = 6000, batch_size: int = 16, lr: float = 5e-4, **options: Any
) -> Path:
    """Train the image generator into ``out``; returns ``out/model`` (the EMA weights the pipeline loads).

    ``options`` are :func:`~choi.training.diffusion.train_stage`'s (workers, seed, resume, init_from, ...).
    """
    return train_stage(ImageTask, data, out, config=config, steps=steps, batch_size=batch_size, lr=lr, **options)
