"""Stage 2 of choi: the mask-guided, identity-preserving image generator.

A conditional diffusion model over the 128×128 RGB image (pixel space, 8×8 space-to-depth patches,
so that a 2-core CPU renders an image in about a second), built on diffusers' ``UNet2DConditionModel``:

- the human reference and the object reference each become a grid of tokens (a shared conv trunk
  over the reference cropped to its subject, RGB + silhouette) tagged with a learned *role*
  embedding, and reach the network through cross-attention next to the interaction text: two
  separate identities, never one tiled picture as in the public reference code;
- the layout enters as input channels: the stage-1 human and object masks, or, in the
  single-stage (box-only) mode that the paper compares against, only the box;
- the background with the region to generate removed (inpainting style) plus the known-pixel map;
- the pooled text, box coordinates and condition flags enter the timestep embedding.

Every condition has a per-sample flag; a dropped condition becomes a learned null token (text, each
reference) or zero channels (masks, box, background). Training drops them at random, and
classifier-free guidance drops text and references in its unconditional branch.

Example:
    >>> model = ImageGenerator.from_preset("tiny")
    >>> cond = ImageConditions.build(text, refs, ref_masks, masks=masks, region=region)
    >>> v = model(torch.randn(1, 3, 128, 128), torch.tensor([500]), cond)  # (1, 3, 128, 128)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from diffusers.configuration_utils import register_to_config
from torch import nn

from choi.errors import ChoiError, quote
from choi.models.conditioning import box_coverage, drop_tokens, fit_to_box, warp_into_masks
from choi.models.denoiser import ConditionalDenoiser, EncodedConditions
from choi.models.text_encoder import TEXT_DIM, TEXT_ENCODER_NAME, TextEmbeddings

FLAG_NAMES = ("text", "human", "object", "masks", "box", "background")


IMAGE_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {},  # the __init__ defaults, made for a 2-core CPU
    # For a GPU: 4x4 patches (finer faces and patterns), wider, deeper, attention in the middle too.
    "small": {
        "patch_size": 4,
        "block_out_channels": (96, 192, 288, 384),
        "down_block_types": ("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "layers_per_block": 2,
        "cross_attention_dim": 256,
    },
}

# Configs saved before these parameters existed describe models built without them.
LEGACY_DEFAULTS = {"warp_prior": False, "warp_turns": (0, 0)}


@dataclass
class ImageConditions:
    """What N images are conditioned on. A False flag means absent or dropped; its values are ignored."""

    text: TextEmbeddings
    refs: torch.Tensor  # (N, 2, 3, H, W) float [0, 1]: human and object reference photos
    ref_masks: torch.Tensor  # (N, 2, H, W) float {0, 1}: their silhouettes
    masks: torch.Tensor  # (N, 2, S, S) float [0, 1]: human and object layout masks
    box: torch.Tensor  # (N, 4) normalised union box
    background: torch.Tensor  # (N, 3, S, S) float [0, 1]
    region: torch.Tensor  # (N, 1, S, S) float [0, 1]: where to generate (1) vs keep the background (0)
    has_text: torch.Tensor  # (N,) bool
    has_human: torch.Tensor
    has_object: torch.Tensor
    has_masks: torch.Tensor
    has_box: torch.Tensor
    has_background: torch.Tensor

    @classmethod
    def build(
        cls,
        text: TextEmbeddings,
        refs: torch.Tensor,
        ref_masks: torch.Tensor,
        region: torch.Tensor,
        masks: torch.Tensor | None = None,
        box: torch.Tensor | None = None,
        background: torch.Tensor | None = None,
    ) -> ImageConditions:
        n, size, device = refs.shape[0], region.shape[-1], refs.device
        yes = torch.ones(n, dtype=torch.bool, device=device)
        return cls(
            text=text,
            refs=refs.float(),
            ref_masks=ref_masks.float(),
            masks=torch.zeros(n, 2, size, size, device=device) if masks is None else masks.float(),
            box=torch.zeros(n, 4, device=device) if box is None else box.float(),
            background=torch.zeros(n, 3, size, size, device=device) if background is None else background.float(),
            region=region.float(),
            has_text=yes,
            has_human=yes,
            has_object=yes,
            has_masks=yes if masks is not None else ~yes,
            has_box=yes if box is not None else ~yes,
            has_background=yes if background is not None else ~yes,
        )

    def __len__(self) -> int:
        return self.refs.shape[0]

    def dropped(self, **drop: torch.Tensor | bool) -> ImageConditions:
        """A copy with conditions switched off, by flag name (``text=True``, ``human=mask``...)."""
        unknown = set(drop) - set(FLAG_NAMES)
        if unknown:
            raise ValueError(f"unknown conditions {sorted(unknown)}; known: {FLAG_NAMES}")
        changes = {}
        for name, value in drop.items():
            flag = getattr(self, f"has_{name}")
            changes[f"has_{name}"] = flag & ~torch.as_tensor(value, dtype=torch.bool, device=flag.device)
        return replace(self, **changes)

    def flags(self) -> torch.Tensor:
        return torch.stack([getattr(self, f"has_{name}") for name in FLAG_NAMES], 1)  # (N, 6)

    def to(self, device: torch.device | str) -> ImageConditions:
        return ImageConditions(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


@dataclass
class EncodedImageConditions(EncodedConditions):
    """:class:`~choi.models.denoiser.EncodedConditions` plus what the warp prior adds to the output.

    ``extra`` is (N, 7 [+ 4], S, S): masks, box map, background with the region removed, known-pixel
    map [, warped references and their coverage]; ``vector`` is (N, text_dim + 4 + 6).
    """

    skip: torch.Tensor  # (N, 3, S, S): added to a "sample" prediction: known background + warped references
    keep: torch.Tensor  # (N, 1, S, S) in [0, 1]: how much of the warp prior the correction may not change


def check_prior_strength(value: Sequence[float] | str) -> tuple[float, float]:
    """``(human, object)`` or ``"H,O"`` → two floats in [0, 1], or a ChoiError saying what is allowed."""
    try:
        parts = [float(v) for v in (value.split(",") if isinstance(value, str) else value)]
    except (TypeError, ValueError):
        parts = []
    if len(parts) != 2 or not all(0.0 <= v <= 1.0 for v in parts):
        raise ChoiError(f"prior strength must be two numbers in [0, 1] (human,object), got {quote(value)}")
    return parts[0], parts[1]


class ImageGenerator(ConditionalDenoiser):
    """Conditional diffusion model over RGB images in [-1, 1]; predicts ``prediction_type`` targets.

    Example:
        >>> model = ImageGenerator.from_preset("tiny")
        >>> model.save_pretrained("runs/image/model")
        >>> model = ImageGenerator.from_pretrained("runs/image/model")
    """

    presets = IMAGE_PRESETS
    preset_kind = "image"

    @register_to_config
    def __init__(
        self,
        sample_size: int = 128,
        # A 16x16 grid of 8x8 patches: on a 2-core CPU the UNet's cost is per level and per grid cell.
        patch_size: int = 8,
        block_out_channels: tuple[int, ...] = (96, 128, 192),
        # Cross-attention at 8x8 and 4x4: where a body part is matched with the reference's colours.
        down_block_types: tuple[str, ...] = ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types: tuple[str, ...] = ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        mid_block_type: str | None = None,
        layers_per_block: int = 1,
        norm_num_groups: int = 32,
        cross_attention_dim: int = 128,
        attention_head_dim: int = 32,
        ref_size: int = 64,  # each reference is cropped to its subject and resized to this square
        ref_grid: int = 8,  # 64 tokens per reference
        text_encoder: str = TEXT_ENCODER_NAME,
        text_dim: int = TEXT_DIM,
        max_text_tokens: int = 16,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "squaredcos_cap_v2",
        # The clean image: 8x8 patches cannot carry per-pixel noise through 96 channels (v/epsilon gave speckle).
        prediction_type: str = "sample",
        # A first guess, each reference stretched into its mask, that the network only corrects: input
        # channels plus a full-resolution skip, so the patches need not carry the identities' pixels.
        warp_prior: bool = True,
        # Turns (human, object) each first guess tries, each also mirrored: a person stands upright but
        # may face either way (1); an object may lie at any angle (48: every 7.5 degrees).
        warp_turns: tuple[int, int] = (1, 48),
    ):
        super().__init__()
        if warp_prior and prediction_type != "sample":
            raise ChoiError("warp_prior adds its first guess to the predicted image: it needs prediction_type 'sample'")
        if len(warp_turns) != 2 or min(warp_turns) < 0:
            raise ChoiError(f"warp_turns needs two counts >= 0 (human, object), got {warp_turns}")
        # noisy image (3) + masks, box map, background, known-pixel map (7) [+ warped references, coverage (4)];
        # each reference as RGB + silhouette (4 channels)
        self._build(
            sample_channels=3, extra_channels=7 + 4 * warp_prior, ref_channels=4, num_flags=len(FLAG_NAMES), refine=True
        )

    @classmethod
    def extract_init_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> Any:
        """diffusers' config reader, with :data:`LEGACY_DEFAULTS` for keys an old config lacks."""
        missing = {k: v for k, v in LEGACY_DEFAULTS.items() if k not in config_dict}
        return super().extract_init_dict({**config_dict, **missing}, **kwargs)

    def load_compatible(self, other: ImageGenerator) -> list[str]:
        """Start from ``other``'s weights (fine-tuning, or growing a model into a newer config).

        Same-shaped tensors are copied; an input convolution with more input channels here gets
        ``other``'s weights for the channels they share and zeros for the new ones, so it computes
        exactly what it did. When this model adds the warp prior to its output and ``other`` did not,
        the output convolution starts at zero: the untrained correction adds nothing to the first
        guess. Returns the names of the tensors left as initialised.
        """
        own, theirs = self.state_dict(), other.state_dict()
        if self.config.warp_prior and not other.config.warp_prior:
            theirs = {k: v for k, v in theirs.items() if not k.startswith("unet.conv_out.")}
            nn.init.zeros_(self.unet.conv_out.weight)
            nn.init.zeros_(self.unet.conv_out.bias)
        kept = []
        with torch.no_grad():
            for name, tensor in own.items():
                src = theirs.get(name)
                if src is not None and src.shape == tensor.shape:
                    tensor.copy_(src)
                elif name == "unet.conv_in.weight" and src is not None and self._grows(src.shape, other):
                    # space-to-depth keeps channel c in rows c·p² … c·p² + p² - 1, and the new
                    # condition channels come last: the shared rows line up
                    tensor.zero_()
                    tensor[:, : src.shape[1]] = src
                else:
                    kept.append(name)
        return kept

    def _grows(self, shape: torch.Size, other: ImageGenerator) -> bool:
        own = self.unet.conv_in.weight.shape
        same = shape[0] == own[0] and shape[2:] == own[2:] and other.config.patch_size == self.config.patch_size
        return same and shape[1] < own[1]

    def reference_crops(self, refs: torch.Tensor, ref_masks: torch.Tensor) -> torch.Tensor:
        """(N, 2, 3, H, W) photos + (N, 2, H, W) silhouettes → (N, 2, 4, R, R) subject crops in [-1, 1]."""
        n, r = ref_masks.shape[:2]
        masks = ref_masks.flatten(0, 1)[:, None].float()  # (N·2, 1, H, W)
        layers = torch.cat([refs.flatten(0, 1).float() * masks, masks], 1)  # subject on black + silhouette
        crops = fit_to_box(layers, masks, self.config.ref_size) * 2 - 1
        return crops.reshape(n, r, 4, *crops.shape[-2:])

    def encode_conditions(
        self, cond: ImageConditions, prior_strength: tuple[float, float] = (0.0, 0.0)
    ) -> EncodedImageConditions:
        """Everything the denoiser needs from ``cond``, computed once per sampling run.

        ``prior_strength`` (human, object), each in [0, 1], scales down the network's correction of
        the warp prior where that reference covers the layout: 0 keeps the whole correction (as in
        training), 1 keeps the warped reference's own pixels. No effect without the warp prior.
        """
        prior_strength = check_prior_strength(prior_strength)
        dtype, size = self.dtype, self.config.sample_size
        text = self.text_proj(cond.text.tokens.to(dtype))
        text, text_mask = drop_tokens(text, cond.text.mask, cond.has_text, self.null_text)

        refs = self.refs(self.reference_crops(cond.refs, cond.ref_masks).to(dtype))  # (N, 2·G², D)
        per_role = refs.shape[1] // 2
        ones = torch.ones(refs.shape[:2], dtype=torch.bool, device=refs.device)
        human, human_mask = drop_tokens(refs[:, :per_role], ones[:, :per_role], cond.has_human, self.null_refs[0])
        obj, obj_mask = drop_tokens(refs[:, per_role:], ones[:, per_role:], cond.has_object, self.null_refs[1])

        def on(flag: torch.Tensor) -> torch.Tensor:
            return flag.to(dtype)[:, None, None, None]

        masks = (cond.masks.to(dtype) * 2 - 1) * on(cond.has_masks)
        box_map = (box_coverage(cond.box.float(), size).to(dtype) * 2 - 1) * on(cond.has_box)
        known = (1 - cond.region.to(dtype)) * on(cond.has_background)  # background pixels the model may see
        background = (cond.background.to(dtype) * 2 - 1) * known
        extra = [masks, box_map, background, known * 2 - 1]
        skip, keep = torch.zeros_like(background), torch.zeros_like(known)
        if self.config.warp_prior:
            prior, visible = self.warped_references(cond)  # visible: (N, 2, S, S) per role
            cover = visible.sum(1, keepdim=True)
            extra += [prior, cover * 2 - 1]
            skip = prior + background
            strength = torch.tensor([float(a) for a in prior_strength], dtype=dtype, device=visible.device)
            keep = (visible * strength[None, :, None, None]).sum(1, keepdim=True)
        vector = torch.cat(
            [
                cond.text.pooled.to(dtype) * cond.has_text[:, None].to(dtype),
                cond.box.to(dtype) * cond.has_box[:, None].to(dtype),
                cond.flags().to(dtype),
            ],
            1,
        )
        return EncodedImageConditions(
            context=torch.cat([text, human, obj], 1),
            context_mask=torch.cat([text_mask, human_mask, obj_mask], 1).to(dtype),
            extra=torch.cat(extra, 1),
            vector=vector,
            skip=skip,
            keep=keep,
        )

    def warped_references(self, cond: ImageConditions) -> tuple[torch.Tensor, torch.Tensor]:
        """The first guess: (N, 3, S, S) in [-1, 1], zero where uncovered, and how much of each pixel
        each role covers, (N, 2, S, S) (human, then the object where the person leaves it visible).

        The human reference stretched into the human mask over the object reference stretched into
        the object mask, each first turned as ``warp_turns`` allows; a dropped reference (or no
        masks) contributes nothing.
        """
        dtype = self.dtype
        layers = torch.stack(
            [
                warp_into_masks(cond.refs[:, r], cond.ref_masks[:, r : r + 1], cond.masks[:, r : r + 1], turns)
                for r, turns in enumerate(self.config.warp_turns)
            ],
            1,
        )  # (N, 2, 4, S, S)
        use = torch.stack([cond.has_human, cond.has_object], 1) & cond.has_masks[:, None]  # (N, 2)
        layers = (layers * use[..., None, None, None].float()).to(dtype)
        (h_rgb, h_cov), (o_rgb, o_cov) = ((layers[:, r, :3], layers[:, r, 3:]) for r in range(2))
        visible = torch.cat([h_cov, (1 - h_cov) * o_cov], 1)
        cover = visible.sum(1, keepdim=True)
        rgb = h_rgb + (1 - h_cov) * o_rgb  # premultiplied "over"
        return (rgb * 2 - cover), visible  # [0, 1] colours → [-1, 1], still zero where uncovered

    def denoise(self, sample: torch.Tensor, timestep: torch.Tensor, enc: EncodedImageConditions) -> torch.Tensor:
        """The network prediction for noisy images ``sample`` (N, 3, S, S) at ``timestep`` (N,) or scalar."""
        out = super().denoise(sample, timestep, enc)
        if not self.config.warp_prior:
            return out
        return enc.skip.to(out.dtype) + out * (1 - enc.keep.to(out.dtype))  # the first guess + its correction
