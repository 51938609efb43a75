"""choi-sd as a model family: its options and its two stages behind the pipeline's protocols.

Stage 1 is choi-tiny's mask model (its layout choice and object fit included). Stage 2 is diffusers'
stock ``StableDiffusionInpaintPipeline`` with the IP-Adapter loaded twice: the person's reference
enters only inside the person's mask, the object's only inside the object's (``ip_adapter_masks``),
and the interaction is the prompt. Zero-shot: nothing here was trained by choi.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
from diffusers.image_processor import IPAdapterMaskProcessor
from PIL import Image
from scipy.ndimage import binary_dilation

from choi.errors import ChoiError, quote
from choi.models.sd_adapter import identity_embeds, layout_control
from choi.pipelines.stages import Callback, Layouts, StageInputs, check_number
from choi.pipelines.tiny import TinyOptions
from choi.pipelines.tiny.stages import MAX_LAYOUT_CANDIDATES, TinyMaskStage

DEFAULT_STEPS = 30  # DPM-Solver++(2M) on SD 1.x is converged by ~25 steps (DESIGN §7 times 30)
DEFAULT_GUIDANCE = 7.5  # SD 1.x's customary classifier-free guidance scale
REFERENCE_FILL = 255  # the references reach the image encoder cut out on white, as IP-Adapter's examples show them
SCHEDULERS = {"base": None, "dpm++": DPMSolverMultistepScheduler, "ddim": DDIMScheduler,
              "euler": EulerDiscreteScheduler}  # fmt: skip


@dataclass(frozen=True)
class SDOptions:
    """choi-sd's own options (``--set key=value``; ``options={...}``), with their defaults.

    The IP-Adapter scales and the negative prompt are common starting points, not tuned by choi:
    choi-sd's quality on real photos has not been measured yet (docs/choi-sd.md).
    """

    prompt: str = "a photo of a person {interaction}"  # the interaction goes where {interaction} is
    negative_prompt: str = "lowres, blurry, deformed, bad anatomy, extra limbs, watermark, text"
    ip_scale_human: float = 0.6  # how strongly the person's reference steers its region (IP-Adapter scale)
    ip_scale_object: float = 0.6
    mask_grow: int = 8  # px of the output: stage 2 repaints the masks grown this much, so edges blend
    strength: float = 1.0  # with a background: how far the region is taken to noise (1: repainted anew)
    # with a background: paint a window around the region, this times its side added each way, at the
    # model's resolution (detail for a small person in a big photo); none: the whole background
    crop_context: float | None = 0.5
    scheduler: str = "dpm++"  # or "base" (the folder's own), "ddim", "euler"
    # stage 1 (choi-tiny's mask model): see choi.pipelines.tiny.TinyOptions
    layout_candidates: int = 4
    fit_object: bool = True
    zoom: bool | None = None

    def __post_init__(self) -> None:
        for name in ("prompt", "negative_prompt"):
            if not isinstance(getattr(self, name), str):
                raise ChoiError(f"option {name} must be text, got {quote(getattr(self, name))}")
        if "{interaction}" not in self.prompt or self.prompt.count("{") != 1 or self.prompt.count("}") != 1:
            got = quote(self.prompt)
            raise ChoiError(f"option prompt must contain {{interaction}} once and no other braces, got {got}")
        check_number("option ip_scale_human", self.ip_scale_human, 0, 2)
        check_number("option ip_scale_object", self.ip_scale_object, 0, 2)
        check_number("option mask_grow", self.mask_grow, 0, 256, integer=True)
        if isinstance(self.strength, bool) or not isinstance(self.strength, int | float) or not 0 < self.strength <= 1:
            raise ChoiError(f"option strength must be a number in (0, 1], got {quote(self.strength)}")
        if self.crop_context is not None:
            check_number("option crop_context", self.crop_context, 0, 10)
        if self.scheduler not in SCHEDULERS:
            raise ChoiError(f"option scheduler must be one of {', '.join(SCHEDULERS)}, got {quote(self.scheduler)}")
        self.stage1()  # checks layout_candidates, fit_object and zoom

    def stage1(self) -> TinyOptions:
        """The options choi-tiny's mask stage takes."""
        check_number("option layout_candidates", self.layout_candidates, 1, MAX_LAYOUT_CANDIDATES, integer=True)
        return TinyOptions(fit_object=self.fit_object, layout_candidates=self.layout_candidates, zoom=self.zoom)


class SDMaskStage:
    """Stage 1: choi-tiny's mask stage, drawn at the output size."""

    def __init__(self, masks: TinyMaskStage):
        self.masks = masks

    def to(self, device: str | torch.device) -> SDMaskStage:
        self.masks.to(device)
        return self

    def __call__(
        self, inputs: StageInputs, steps: int | None, guidance: float | None, options: SDOptions,
        callback: Callback | None,
    ) -> Layouts:  # fmt: skip
        return self.masks(inputs, steps, guidance, options.stage1(), callback)


def grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    """``mask`` dilated by ``pixels`` steps of 4-neighbours (a diamond: never beyond ``pixels`` in L1 distance)."""
    return binary_dilation(mask, iterations=pixels) if pixels > 0 else mask


def reference_image(rgb: np.ndarray, silhouette: np.ndarray) -> Image.Image:
    """The subject cut out on white, cropped to its silhouette and padded to a square (the encoder's crop)."""
    ys, xs = np.nonzero(silhouette)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = np.where(silhouette[y0:y1, x0:x1, None], rgb[y0:y1, x0:x1], REFERENCE_FILL).astype(np.uint8)
    h, w = crop.shape[:2]
    side = max(h, w)
    canvas = np.full((side, side, 3), REFERENCE_FILL, np.uint8)
    canvas[(side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = crop
    return Image.fromarray(canvas)


def blank_reference() -> Image.Image:
    """A reference with nothing in it: what trained choi-sd saw for a dropped reference (its CFG negative)."""
    return Image.new("RGB", (64, 64), (REFERENCE_FILL,) * 3)


def context_window(region: np.ndarray, context: float) -> tuple[int, int, int, int]:
    """(top, left, bottom, right): the box around ``region`` with ``context`` times its side added each way,
    square where the frame allows, moved (not cut) to stay inside the frame."""
    ys, xs = np.nonzero(region)
    height, width = region.shape
    if ys.size == 0:
        return 0, 0, height, width
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    side = round(max(y1 - y0, x1 - x0) * (1 + 2 * context))
    h, w = min(side, height), min(side, width)
    top = int(np.clip(round((y0 + y1 - h) / 2), 0, height - h))
    left = int(np.clip(round((x0 + x1 - w) / 2), 0, width - w))
    return top, left, top + h, left + w


def working_size(height: int, width: int, resolution: int, multiple: int) -> tuple[int, int]:
    """The size stage 2 runs at: the output's aspect, its long side ``resolution``, sides multiples of ``multiple``."""
    scale = resolution / max(height, width)
    return tuple(max(multiple, round(n * scale / multiple) * multiple) for n in (height, width))  # type: ignore[return-value]


class SDImageStage:
    """Stage 2: ``StableDiffusionInpaintPipeline`` with one IP-Adapter per role, each masked to its own region.

    With a background only the grown union of the masks is repainted and every other pixel is the
    background's own; without one the whole frame is generated. Image k comes from ``seeds[k]``
    alone (one pipeline call per image, noise drawn on the CPU).
    """

    def __init__(self, pipe: Any, resolution: int, multiple: int, sources: dict[str, str]):
        self.pipe = pipe
        self.default_size = resolution
        self.multiple = multiple
        self.sources = sources  # what the model folder refers to, recorded with every image
        self.inpainting = pipe.unet.config.in_channels == 9  # else the inpainting pipeline's blended mode
        # choi train image --family sd: its layout branch, trained roles and their identity encoder
        self.adapter = getattr(pipe, "choi_adapter", None)
        self.trained = self.adapter is not None
        self._base_scheduler = pipe.scheduler
        self._schedulers: dict[str, Any] = {}
        self._mask_processor = IPAdapterMaskProcessor()

    def to(self, device: str | torch.device) -> SDImageStage:
        self.pipe.to(device)
        return self

    def enable_model_cpu_offload(self, device: str | torch.device = "cuda") -> SDImageStage:
        """Each model on ``device`` only while it runs (diffusers' offload): for GPUs short of memory."""
        self.pipe.enable_model_cpu_offload(device=device)
        return self

    def check_interaction(self, text: str) -> dict[str, Any]:
        tokens = len(self.pipe.tokenizer(text).input_ids)
        limit = self.pipe.tokenizer.model_max_length
        if tokens > limit - 8:  # the template's own words need room too
            raise ChoiError(f"the interaction is {tokens} tokens long; the text encoder reads {limit} in all")
        return {}

    def _trained_embeds(self, references: list[Image.Image], guidance: bool) -> list[torch.Tensor]:
        """Per role (1, 1, D), or (2, 1, D) negative then positive with guidance: the references through the
        adapter's own encoder (CLIP or DINOv2) as in training; the negative is what it was trained on for
        a dropped reference, the blank crop (not zero-shot's zero embedding)."""
        pipe = self.pipe
        images = references + [blank_reference()] * 2 if guidance else references
        pixels = pipe.feature_extractor(images=images, return_tensors="pt").pixel_values
        embeds = identity_embeds(pipe.image_encoder, pixels.to(pipe._execution_device, pipe.image_encoder.dtype))
        if not guidance:
            return [embeds[k : k + 1, None] for k in range(2)]
        return [torch.cat([embeds[2 + k : 3 + k], embeds[k : k + 1]])[:, None] for k in range(2)]

    def _scheduler(self, name: str) -> Any:
        if SCHEDULERS[name] is None:
            return self._base_scheduler
        if name not in self._schedulers:
            self._schedulers[name] = SCHEDULERS[name].from_config(self._base_scheduler.config)
        return self._schedulers[name]

    @torch.no_grad()
    def __call__(
        self, inputs: StageInputs, layouts: Layouts, steps: int | None, guidance: float | None, options: SDOptions,
        callback: Callback | None,
    ) -> tuple[list[np.ndarray], dict[str, Any]]:  # fmt: skip
        """K images (H, W, 3) uint8 for the K layouts.

        Example (through the pipeline):
            >>> pipe = CHOIPipeline.from_pretrained("models/sd")  # written by `choi model sd`
            >>> out = pipe(human="me.jpg", object="bike.jpg", interaction="riding a bicycle", seed=0)
        """
        # 1. Settings, prompt and the two reference embeddings (once for all K images)
        pipe = self.pipe
        steps = DEFAULT_STEPS if steps is None else steps
        guidance = DEFAULT_GUIDANCE if guidance is None else guidance
        prompt = options.prompt.replace("{interaction}", inputs.interaction)
        pipe.scheduler = self._scheduler(options.scheduler)
        pipe.set_ip_adapter_scale([options.ip_scale_human, options.ip_scale_object])
        references = [reference_image(inputs.human, inputs.human_silhouette),
                      reference_image(inputs.object, inputs.object_silhouette)]  # fmt: skip
        if self.trained:
            embeds = self._trained_embeds(references, guidance > 1)
        else:
            embeds = pipe.prepare_ip_adapter_image_embeds(references, None, pipe._execution_device, 1, guidance > 1)
        height, width = inputs.height, inputs.width
        background = inputs.background
        strength = options.strength if background is not None else 1.0

        images, windows = [], []
        for k, seed in enumerate(inputs.seeds):
            # 2. The region to repaint (the grown union; everything without a background), the window
            #    painted (around the region, or the whole frame) at the working size, the role masks in it
            human, obj = layouts.human_masks[k], layouts.object_masks[k]
            region = grow(human | obj, options.mask_grow) if background is not None else np.ones_like(human)
            around = background is not None and options.crop_context is not None
            top, left, bottom, right = context_window(region, options.crop_context) if around else (0, 0, height, width)
            win = np.s_[top:bottom, left:right]
            h, w = working_size(bottom - top, right - left, self.default_size, self.multiple)
            if background is not None:
                init = Image.fromarray(background[win]).resize((w, h), Image.LANCZOS)
            else:
                init = Image.new("RGB", (w, h), (127, 127, 127))  # masked out whole: the frame is drawn from noise
            roles = self._mask_processor.preprocess([_mask_image(human[win], w, h), _mask_image(obj[win], w, h)], h, w)
            extra = {}
            if self.trained and self.adapter.controlnet is None:  # layout channels in the inpainting UNet's conv_in
                self.adapter.set_layout(roles.transpose(0, 1))
            elif self.trained:  # its layout ControlNet: the same 6 channels it was trained on
                painted = torch.from_numpy(np.asarray(_mask_image(region[win], w, h)) > 127).float()[None, None]
                rgb = torch.from_numpy(np.asarray(init, np.float32) / 255).permute(2, 0, 1)[None]
                extra["control_image"] = layout_control(roles.transpose(0, 1), painted, rgb if background is not None
                                                        else torch.zeros_like(rgb))  # fmt: skip
            # 3. The stock inpainting call
            step_callback = None
            if callback is not None:

                def step_callback(p: Any, i: int, t: Any, kw: dict, k: int = k) -> dict:
                    n = p.num_timesteps
                    callback("image", k * n + i + 1, len(inputs.seeds) * n)
                    return kw

            out = pipe(
                prompt=prompt,
                negative_prompt=options.negative_prompt or None,
                image=init,
                mask_image=_mask_image(region[win], w, h),
                height=h,
                width=w,
                strength=strength,
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=torch.Generator().manual_seed(seed),
                ip_adapter_image_embeds=embeds,
                cross_attention_kwargs={"ip_adapter_masks": [roles[0:1], roles[1:2]]},
                callback_on_step_end=step_callback,
                output_type="np",
                **extra,
            )
            painted = (out.images[0] * 255).round().clip(0, 255).astype(np.uint8)
            # 4. Back to the window's size; the background's own pixels outside the region
            if (h, w) != (bottom - top, right - left):
                painted = np.asarray(Image.fromarray(painted).resize((right - left, bottom - top), Image.LANCZOS))
            if background is None:
                image = painted
            else:
                image = background.copy()
                image[win] = np.where(region[win][..., None], painted, background[win])
            images.append(np.ascontiguousarray(image))
            windows.append({"box": [top, left, bottom, right], "working_size": [h, w]})
        record = {
            "steps": steps,
            "guidance": guidance,
            "prompt": prompt,
            "negative_prompt": options.negative_prompt,
            "scheduler": type(pipe.scheduler).__name__,
            "windows": windows,  # per image: the part of the output painted (top, left, bottom, right) and at what size
            "mask_grow": options.mask_grow if background is not None else None,
            "unet": "inpainting" if self.inpainting else "plain (blended inpainting)",
            "model": dict(self.sources),
        }
        return images, record


def _mask_image(mask: np.ndarray, width: int, height: int) -> Image.Image:
    """A (H, W) bool mask → an ``L`` image at (width, height), nearest-neighbour so it stays binary."""
    image = Image.fromarray(mask.astype(np.uint8) * 255)
    return image if image.size == (width, height) else image.resize((width, height), Image.NEAREST)
