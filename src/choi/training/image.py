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
import torch.nn.functional as F

from choi.data.batch import image_tensor, mask_tensor
from choi.data.schema import Sample
from choi.errors import ChoiError
from choi.models.conditioning import (
    box_in_window,
    crop_windows,
    generation_region,
    layout_region,
    snap_silhouettes,
    zoom_window,
)
from choi.models.image_generator import IMAGE_CONFIGS, ImageConditions, ImageGenerator
from choi.models.mask_generator import MaskConditions
from choi.models.text_encoder import TextEncoder
from choi.pipelines.tiny.mask import MaskPipeline, check_strength, sample_masks, split_roles
from choi.pipelines.tiny.render import DEFAULT_GUIDANCE, DEFAULT_STEPS
from choi.pipelines.tiny.stages import OBJECT_FIT_TURNS
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

PERSON_OBJECT_WEIGHT = 4.0  # loss weight of human/object pixels relative to background pixels


@dataclass
class ImageTrainConfig(StageTrainConfig):
    batch_size: int = 16
    p_drop_text: float = 0.1
    p_drop_human: float = 0.1
    p_drop_object: float = 0.1
    p_box_only: float = 0.25  # single-stage samples: the layout is the box alone
    p_drop_background: float = 0.3
    # Two-stage samples whose layout masks are roughened like stage 1's output (holes, ragged edges,
    # islands around them), so the renderer learns to paint whole people and objects from them.
    p_rough_masks: float = 0.0
    # Two-stage samples whose layout is stage 1's own redraw of their true masks from this much of
    # the way to noise (stage1_layouts), so the renderer learns from the masks it will be given.
    p_stage1_masks: float = 0.0
    stage1_strength: float = 0.5
    stage1_model: str | None = None  # a mask model folder; None: the shipped choi-tiny stage 1
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


def roughen_masks(masks: torch.Tensor, holes: float = 0.25, spill: int = 4) -> torch.Tensor:
    """(N, 2, S, S) {0, 1} human/object masks → the same masks as stage 1 tends to draw them.

    A smooth random grain (4-pixel blobs) opens holes in about ``holes`` of each mask and scatters
    islands as often within ``spill`` pixels around it. The roles never overlap: a pixel both would
    claim goes to its true owner, else to the person.
    """
    n, c, s, _ = masks.shape
    grain = torch.rand(n, c, max(1, s // 4), max(1, s // 4), device=masks.device)
    grain = F.interpolate(grain, size=(s, s), mode="bilinear", align_corners=False)
    true = masks > 0
    near = F.max_pool2d(masks.float(), 2 * spill + 1, stride=1, padding=spill) > 0
    rough = (true & (grain > holes)) | (near & ~true & (grain > 1 - holes))
    human, obj = rough[:, 0], rough[:, 1]
    both = human & obj
    human = human & ~(both & true[:, 1])
    obj = obj & ~(both & ~true[:, 1])
    return torch.stack([human, obj], 1).to(masks.dtype)


@torch.no_grad()
def stage1_layouts(stage1: MaskPipeline, batch: dict[str, torch.Tensor], strength: float) -> torch.Tensor:
    """A batch's true (N, 2, S, S) masks as ``stage1`` redraws them from ``strength`` of the way to
    noise, conditioned on the sample's own text, references, box and background: the layout still
    fits the target image, but is drawn the way stage 1 draws. Zooms and fits the object reference's
    outline to the object mask as the pipeline does (:func:`~choi.pipelines.choi.fit_object_masks`).

    A role the redraw loses keeps its true mask (a request always has a person and an object).
    """
    model, masks, box = stage1.model, batch["masks"], batch["union_box"]
    n, size = masks.shape[0], masks.shape[-1]
    window = zoom_window(box) if model.config.zoom else torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand(n, -1)
    window = window.to(masks.device)
    side = model.config.sample_size
    cond = MaskConditions.build(
        batch_text(batch),
        batch["ref_masks"],
        box=box_in_window(box, window),
        background=crop_windows(batch["background"], window, side),
        has_background=batch["has_background"],
    ).to(model.device)
    seeds = torch.randint(0, 2**62, (n,)).tolist()  # the run's RNG: the same redraws on a resumed run
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    drawn = sample_masks(model, cond, generators, init=crop_windows(masks, window, side), strength=strength)
    # Back into the full frame: the frame in the window's coordinates, zero outside the window.
    origin, extent = window[:, :2], window[:, 2:] - window[:, :2]
    frame = torch.cat([-origin / extent, (1 - origin) / extent], 1)
    soft = crop_windows((drawn.to(masks.device) + 1) / 2, frame, size)
    human, obj = split_roles(soft)
    fitted = snap_silhouettes(batch["ref_masks"][:, 1:2], obj[:, None].float(), OBJECT_FIT_TURNS, (size, size))
    fitted = fitted[:, 0] & ~human
    obj = torch.where(fitted.flatten(1).any(1)[:, None, None], fitted, obj)
    layout = torch.stack([human, obj], 1).to(masks.dtype)
    lost = layout.flatten(2).amax(-1) == 0  # (N, 2)
    return torch.where(lost[:, :, None, None], masks, layout)


def conditions_from_batch(
    batch: dict[str, torch.Tensor], box_only: torch.Tensor | None = None, layout: torch.Tensor | None = None
) -> ImageConditions:
    """Every condition of a collated batch switched on (the masks layout, with the box).

    The region to paint is the masks' (grown a little), or for ``box_only`` rows the box's.
    ``layout``: masks to condition on instead of the true ones (roughened, stage 1's redraw); the region
    then covers both.
    """
    size = batch["image"].shape[-1]
    layout = batch["masks"] if layout is None else layout
    region = layout_region(torch.maximum(batch["masks"], layout))
    if box_only is not None:
        region = torch.where(box_only[:, None, None, None], generation_region(batch["union_box"], size), region)
    cond = ImageConditions.build(
        batch_text(batch),
        batch["refs"],
        batch["ref_masks"],
        region=region,
        masks=layout,
        box=batch["union_box"],
        background=batch["background"],
    )
    return cond.dropped(background=~batch["has_background"].bool())


class ImageTask(DiffusionTask):
    """The image generator's data, loss and validation for the shared training loop."""

    name = "image"
    presets = IMAGE_CONFIGS
    model_cls = ImageGenerator
    config_cls = ImageTrainConfig

    def __init__(self, cfg: ImageTrainConfig, text_encoder: TextEncoder | None = None):
        super().__init__(cfg, text_encoder)
        self.stage1 = None
        if cfg.p_stage1_masks > 0:
            self.stage1 = MaskPipeline.from_pretrained(cfg.stage1_model, text_encoder=self.text_encoder)
            if self.stage1.model.config.max_text_tokens != self.model_cfg.max_text_tokens:
                raise ChoiError("--stage1-model reads texts of another length than the image model")
            self.stage1.model.requires_grad_(False)

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
        size = self.model_cfg.sample_size
        if batch["image"].shape[-1] != size:
            raise ChoiError(
                f"the {cfg.model} image model trains at {size}px; the dataset is {batch['image'].shape[-1]}px"
            )
        n, device = batch["image"].shape[0], batch["image"].device

        def drop(p: float) -> torch.Tensor:
            return torch.rand(n, device=device) < p

        box_only = drop(cfg.p_box_only)
        layout = None
        if cfg.p_rough_masks > 0:
            rough = (drop(cfg.p_rough_masks) & ~box_only)[:, None, None, None]
            layout = torch.where(rough, roughen_masks(batch["masks"]), batch["masks"])
        if self.stage1 is not None:
            rows = drop(cfg.p_stage1_masks) & ~box_only
            layout = batch["masks"] if layout is None else layout
            if rows.any():
                picked = {k: v[rows] for k, v in batch.items() if isinstance(v, torch.Tensor)}
                layout = layout.clone()
                layout[rows] = stage1_layouts(self.stage1.to(device), picked, cfg.stage1_strength)
        cond = conditions_from_batch(batch, box_only, layout).dropped(
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

    ``options`` are :func:`~choi.training.diffusion.train_stage`'s (workers, seed, resume, init_from, ...)
    and ``rough_masks``: the fraction of two-stage samples given roughened masks (:func:`roughen_masks`);
    ``stage1_masks``: the fraction given stage 1's redraw of their masks from ``stage1_strength`` of the
    way to noise by the mask model in ``stage1_model`` (default: the shipped one; :func:`stage1_layouts`).
    """
    recipe = {
        "p_rough_masks": check_fraction("--rough-masks", options.pop("rough_masks", 0.0)),
        "p_stage1_masks": check_fraction("--stage1-masks", options.pop("stage1_masks", 0.0)),
        "stage1_strength": check_strength(options.pop("stage1_strength", 0.5), "--stage1-strength"),
        "stage1_model": options.pop("stage1_model", None),
    }
    return train_stage(
        ImageTask, data, out, config=config, steps=steps, batch_size=batch_size, lr=lr, recipe=recipe, **options
    )
