"""choi-tiny's stage 2: paint the referenced person and object inside a layout (masks, or a box alone)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from choi.errors import ChoiError
from choi.models.conditioning import generation_region, layout_region
from choi.models.image_generator import ImageConditions, ImageGenerator, check_prior_strength
from choi.pipelines.inputs import pad_square
from choi.pipelines.sampling import denoise, get_noise, make_scheduler
from choi.pipelines.tiny.runner import ModelRunner

# One step, the clean-image estimate from pure noise: 8x8 patches turn more steps into speckle
# (docs/experiments.md#steps).
DEFAULT_STEPS = 1
DEFAULT_GUIDANCE = 1.0  # no CFG: the warp prior already steers the image (docs/experiments.md#steps)


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1) / 255.0


class ImageRenderer(ModelRunner):
    """choi-tiny's image model as a renderer: references + interaction + layout → K images.

    Example:
        >>> render = ImageRenderer.from_pretrained("runs/image/model")
        >>> images = render(h_rgb, h_sil, o_rgb, o_sil, "kick ball", layout_masks=(hm, om), generators=gens)
    """

    model_class, what = ImageGenerator, "image"

    @torch.no_grad()
    def __call__(
        self,
        human_rgb: np.ndarray,
        human_sil: np.ndarray,
        object_rgb: np.ndarray,
        object_sil: np.ndarray,
        interaction: str,
        generators: Sequence[torch.Generator],
        layout_masks: tuple[np.ndarray, np.ndarray] | None = None,
        box: Sequence[float] | None = None,
        background: np.ndarray | None = None,
        num_inference_steps: int = DEFAULT_STEPS,
        guidance_scale: float = DEFAULT_GUIDANCE,
        prior_strength: tuple[float, float] = (0.5, 1.0),
        composite_margin: float = 1 / 128,
        callback: Callable[[int, int], None] | None = None,
    ) -> list[np.ndarray]:
        """K images, (H, W, 3) uint8: the background's size, else the masks', else the model's.

        ``layout_masks`` are (K, H, W) human and object masks (two-stage); without them the layout
        is ``box`` alone (single-stage). The model is given the region it was trained to paint: the
        masks grown by a few pixels (or the box plus a margin). With a background, the output keeps
        the background's own pixels beyond ``composite_margin`` (a fraction of the side) around the
        masks, or outside that box region. ``prior_strength`` (human, object) is how much of each
        warped reference is kept as it is.
        """
        model, device = self.model, self.model.device
        size = model.config.sample_size
        k = len(generators)
        if layout_masks is None and box is None:
            raise ChoiError("stage 2 needs a layout: the masks, or at least the box")

        # 1. Layout and region, per image, at the model's size
        if layout_masks is not None:
            hm, om = (np.asarray(m).astype(bool).reshape(-1, *np.shape(m)[-2:]) for m in layout_masks)
            if len(hm) != k:
                raise ChoiError(f"got {len(hm)} layout masks for {k} images")
            out_h, out_w = hm.shape[-2:]
            masks = F.interpolate(torch.from_numpy(np.stack([hm, om], 1)).float(), size=(size, size), mode="area")
            box_t, region = None, layout_region(masks)  # (K, 1, S, S): the masks carry the layout, box unused
        else:
            out_h = out_w = size
            masks, box_t = None, torch.tensor([box] * k, dtype=torch.float32)
            region = generation_region(box_t, size)
        if background is not None:
            out_h, out_w = background.shape[:2]

        # 2. Conditions
        refs = torch.stack(
            [_to_tensor(pad_square(human_rgb, size, Image.BILINEAR)), _to_tensor(pad_square(object_rgb, size))]
        )
        ref_masks = torch.stack(
            [torch.from_numpy(pad_square(s.astype(np.uint8) * 255, size) > 127) for s in (human_sil, object_sil)]
        ).float()
        bg = None
        if background is not None:
            bg = _to_tensor(np.asarray(Image.fromarray(background).resize((size, size), Image.BILINEAR)))[None]
        text = self.text_encoder([interaction.strip()] * k).to(device)
        cond = ImageConditions.build(
            text,
            refs[None].expand(k, -1, -1, -1, -1).to(device),
            ref_masks[None].expand(k, -1, -1, -1).to(device),
            region=region.to(device),
            masks=None if masks is None else masks.to(device),
            box=None if box_t is None else box_t.to(device),
            background=None if bg is None else bg.expand(k, -1, -1, -1).to(device),
        )
        enc = model.encode_conditions(cond, check_prior_strength(prior_strength))
        use_cfg = guidance_scale > 1.0
        uncond = model.encode_conditions(cond.dropped(text=True, human=True, object=True)) if use_cfg else None

        # 3. Denoising loop
        scheduler = make_scheduler(model.config)
        noise = get_noise(generators, (3, size, size), device, torch.float32)
        x0 = denoise(model, scheduler, noise, enc, uncond, num_inference_steps, guidance_scale, callback)

        # 4. To the output size; composite: outside the painted pixels, exactly the given background
        images = ((x0.float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        if (out_h, out_w) != (size, size):
            images = np.stack([np.asarray(Image.fromarray(im).resize((out_w, out_h), Image.BICUBIC)) for im in images])
        if background is not None:
            painted = region  # with masks: the masks grown by composite_margin at their own size
            if layout_masks is not None:
                painted = layout_region(torch.from_numpy(np.stack([hm, om], 1)).float(), composite_margin)
            keep = F.interpolate(painted, size=(out_h, out_w), mode="nearest")[:, 0].numpy() < 0.5
            images = np.where(keep[..., None], background[None], images)
        return list(images)
