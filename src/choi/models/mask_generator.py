"""Stage 1 of choi: the interaction-aware mask generator.

A conditional diffusion model over two mask channels (human, object), 64×64 by default, built on diffusers'
``UNet2DConditionModel``. Unlike the public reference code, whose stage 1 ignores the interaction
text and draws one union silhouette, every condition here reaches the network:

- the interaction text (frozen MiniLM tokens, projected) and the *reference silhouettes* (a small
  conv encoder → 4×4 tokens per reference, tagged with a human/object role embedding) form the
  cross-attention context, so the layout depends on the verb and fits this person's build and
  this object's shape;
- the pooled sentence embedding, the box coordinates and the condition flags enter the timestep
  embedding (diffusers' ``class_embed_type="projection"``), a second, global route for the text;
- the optional union box (a coverage map) and background (downsampled RGB) are extra input
  channels;
- optionally (``image_dim`` > 0, choi-sd's stage 1) the references' *identity*: each reference's
  embedding from a frozen image encoder (the choi-sd folder's CLIP image encoder) becomes
  ``image_tokens`` role-tagged tokens beside the silhouette tokens (diffusers' ``ImageProjection``,
  as IP-Adapter's). With ``image_dim`` 0 (choi-tiny) the model has no such parameters.

The text tokens come from the frozen encoder ``text_encoder`` names: MiniLM for choi-tiny, the
Stable Diffusion base's CLIP text encoder for the ``sd`` preset
(:func:`~choi.models.text_encoder.text_encoder_for`).

Every condition has a per-sample flag. A dropped or absent condition is replaced by a learned null
token (text, references) or zero channels (box, background): that is what training drops at random
and what classifier-free guidance drops in its unconditional branch.

Example:
    >>> model = MaskGenerator.from_preset("tiny")
    >>> cond = MaskConditions.build(text_encoder(["ride bicycle"]), ref_masks)  # ref_masks (1, 2, H, W)
    >>> v = model(torch.randn(1, 2, 64, 64), torch.tensor([500]), cond)  # (1, 2, 64, 64)
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import ImageProjection
from torch import nn

from choi.errors import ChoiError
from choi.models.conditioning import box_coverage, drop_tokens, fit_silhouettes
from choi.models.denoiser import ConditionalDenoiser, EncodedConditions
from choi.models.text_encoder import SD_TEXT_DIM, SD_TEXT_ENCODER, TEXT_DIM, TEXT_ENCODER_NAME, TextEmbeddings

NUM_FLAGS = 4  # has_text, has_refs, has_box, has_background


MASK_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {},  # the __init__ defaults: ~2.3 M parameters, made for a 2-core CPU
    # For a GPU: 2x2 patches (finer edges), attention at two levels and in the middle, wider and deeper.
    "small": {
        "patch_size": 2,
        "block_out_channels": (64, 128, 192),
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "cross_attention_dim": 192,
    },
    # choi-sd's stage 1 (choi train mask --family sd): 128x128 masks, the SD 1.x base's CLIP text tokens and
    # CLIP image-encoder identity tokens: 107.9 M parameters (with ViT-H's 1024-wide embeddings).
    "sd": {
        "sample_size": 128,
        "patch_size": 2,
        "block_out_channels": (128, 256, 384, 384),
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "cross_attention_dim": 512,
        "attention_head_dim": 64,
        "text_encoder": SD_TEXT_ENCODER,
        "text_dim": SD_TEXT_DIM,
        "max_text_tokens": 32,  # free text, longer than choi-tiny's interaction names
        "image_dim": 1024,  # the embedding width of IP-Adapter SD 1.5's ViT-H/14 image encoder; set from the folder
    },
}


# --- conditions ---------------------------------------------------------------------------------


@dataclass
class MaskConditions:
    """What N masks are conditioned on. A False flag means absent or dropped; its values are ignored."""

    text: TextEmbeddings  # interaction text, from the frozen text encoder
    ref_masks: torch.Tensor  # (N, 2, H, W) float {0, 1}: human and object reference silhouettes
    box: torch.Tensor  # (N, 4) normalised union box x1, y1, x2, y2
    background: torch.Tensor  # (N, 3, H', W') float [0, 1]
    has_text: torch.Tensor  # (N,) bool
    has_refs: torch.Tensor  # (N,) bool
    has_box: torch.Tensor  # (N,) bool
    has_background: torch.Tensor  # (N,) bool
    ref_embeds: torch.Tensor | None = None  # (N, 2, E) image-encoder embeddings of the references (choi-sd)

    @classmethod
    def build(
        cls,
        text: TextEmbeddings,
        ref_masks: torch.Tensor,
        box: torch.Tensor | None = None,
        background: torch.Tensor | None = None,
        has_box: torch.Tensor | None = None,
        has_background: torch.Tensor | None = None,
        ref_embeds: torch.Tensor | None = None,
    ) -> MaskConditions:
        n, device = ref_masks.shape[0], ref_masks.device
        yes = torch.ones(n, dtype=torch.bool, device=device)
        if box is None:
            box, has_box = torch.zeros(n, 4, device=device), ~yes
        if background is None:
            background, has_background = torch.zeros(n, 3, 8, 8, device=device), ~yes
        return cls(
            text=text,
            ref_masks=ref_masks.float(),
            box=box.float(),
            background=background.float(),
            has_text=yes,
            has_refs=yes,
            has_box=yes if has_box is None else has_box.bool(),
            has_background=yes if has_background is None else has_background.bool(),
            ref_embeds=ref_embeds,
        )

    def __len__(self) -> int:
        return self.ref_masks.shape[0]

    def dropped(
        self,
        text: torch.Tensor | bool = False,
        refs: torch.Tensor | bool = False,
        box: torch.Tensor | bool = False,
        background: torch.Tensor | bool = False,
    ) -> MaskConditions:
        """A copy with the given conditions switched off (``True`` for every row, or an (N,) bool mask)."""

        def off(flag: torch.Tensor, drop: torch.Tensor | bool) -> torch.Tensor:
            return flag & ~torch.as_tensor(drop, dtype=torch.bool, device=flag.device)

        return replace(
            self,
            has_text=off(self.has_text, text),
            has_refs=off(self.has_refs, refs),
            has_box=off(self.has_box, box),
            has_background=off(self.has_background, background),
        )

    def to(self, device: torch.device | str) -> MaskConditions:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return MaskConditions(**{k: None if v is None else v.to(device) for k, v in values.items()})


# --- network ------------------------------------------------------------------------------------


class MaskGenerator(ConditionalDenoiser):
    """Conditional diffusion model over (human, object) masks; predicts ``prediction_type`` targets.

    Example:
        >>> model = MaskGenerator.from_preset("tiny")
        >>> model.save_pretrained("runs/mask/model")  # config.json + safetensors
        >>> model = MaskGenerator.from_pretrained("runs/mask/model")
    """

    presets = MASK_PRESETS
    preset_kind = "mask"
    _supports_gradient_checkpointing = True  # diffusers' switch: the UNet's blocks recompute in backward

    @register_to_config
    def __init__(
        self,
        sample_size: int = 64,  # mask side: limbs stay 2-3 px wide; see docs/experiments.md#mask-96
        # Space-to-depth to a 16x16 grid: on a CPU the UNet's cost is per op, so fewer levels buy speed.
        patch_size: int = 4,
        block_out_channels: tuple[int, ...] = (64, 96),
        # Attention at the 8x8 level only: there the layout is decided, and it is cheap on a CPU.
        down_block_types: tuple[str, ...] = ("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types: tuple[str, ...] = ("CrossAttnUpBlock2D", "UpBlock2D"),
        mid_block_type: str | None = None,  # the 8x8 self-attention already sees the whole mask
        layers_per_block: int = 1,
        norm_num_groups: int = 16,
        cross_attention_dim: int = 128,
        attention_head_dim: int = 32,
        ref_size: int = 32,  # reference silhouettes are cropped to their box and resized to this square
        ref_grid: int = 4,  # tokens per side per reference: 16 tokens per role
        text_encoder: str = TEXT_ENCODER_NAME,  # the frozen encoder the text tokens must come from
        text_dim: int = TEXT_DIM,
        max_text_tokens: int = 16,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "squaredcos_cap_v2",  # cosine: a linear schedule destroys small images too fast
        prediction_type: str = "v_prediction",  # well-behaved at both ends of the schedule, for few-step sampling
        # Trained on zoom windows too (--zoom), so its pipeline zooms on a given box; see docs/experiments.md#zoom
        zoom: bool = False,
        image_dim: int = 0,  # > 0: the width of the reference embeddings (ref_embeds) read as identity tokens
        image_tokens: int = 4,  # identity tokens per reference
    ):
        super().__init__()
        # noisy masks (2) + box map (1) + background (3); reference silhouettes (1 channel)
        self._build(sample_channels=2, extra_channels=1 + 3, ref_channels=1, num_flags=NUM_FLAGS, refine=False)
        if image_dim:
            dim = self.config.cross_attention_dim
            self.identity = ImageProjection(image_dim, dim, image_tokens)  # (N, E) → (N, K, D), layer-normed
            self.identity_roles = nn.Parameter(torch.randn(2, dim) * 0.02)  # human, object

    def encode_conditions(self, cond: MaskConditions) -> EncodedConditions:
        """Everything the denoiser needs from ``cond``, computed once per sampling run."""
        cfg, dtype = self.config, self.dtype
        n, size = len(cond), cfg.sample_size
        has = torch.stack([cond.has_text, cond.has_refs, cond.has_box, cond.has_background], 1)  # (N, 4)

        # Text tokens; a dropped text attends to the learned null token alone.
        text = self.text_proj(cond.text.tokens.to(dtype))  # (N, L, D)
        text, text_mask = drop_tokens(text, cond.text.mask, cond.has_text, self.null_text)

        # Reference tokens; dropped references become one null token per role.
        refs = self.refs(fit_silhouettes(cond.ref_masks, cfg.ref_size).to(dtype)[:, :, None] * 2 - 1)  # (N, 2·G², D)
        per_role = refs.shape[1] // 2
        null = self.null_refs.to(dtype).repeat_interleave(per_role, 0)  # (2·G², D)
        keep = cond.has_refs[:, None]
        refs = torch.where(keep[..., None], refs, null)
        role_first = (torch.arange(refs.shape[1], device=refs.device) % per_role == 0).expand(n, -1)
        refs_mask = torch.where(keep, torch.ones_like(role_first), role_first)
        if cfg.image_dim:  # identity tokens after the silhouette tokens; dropped with the references
            ids, ids_mask = self._identity_tokens(cond)
            refs, refs_mask = torch.cat([refs, ids], 1), torch.cat([refs_mask, ids_mask], 1)

        box_map = (box_coverage(cond.box.float(), size) * 2 - 1) * cond.has_box[:, None, None, None]
        bg = F.interpolate(cond.background.float(), size=(size, size), mode="bilinear", antialias=True)
        bg = (bg * 2 - 1) * cond.has_background[:, None, None, None]
        vector = torch.cat(
            [cond.text.pooled.to(dtype) * cond.has_text[:, None], cond.box.to(dtype) * cond.has_box[:, None], has], 1
        )
        return EncodedConditions(
            context=torch.cat([text, refs], 1),  # (N, L + 2·G², D)
            context_mask=torch.cat([text_mask, refs_mask], 1).to(dtype),
            extra=torch.cat([box_map, bg], 1).to(dtype),  # (N, 4, S, S)
            vector=vector.to(dtype),
        )

    def _identity_tokens(self, cond: MaskConditions) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 2·K, D) role-tagged identity tokens and their (N, 2·K) mask: off where the references are dropped.

        A dropped row still runs through the projection (its tokens zeroed by ``where``), so every
        parameter is in the graph whatever is dropped (DDP needs that)."""
        if cond.ref_embeds is None:
            raise ChoiError("this mask model reads the references' image embeddings: give ref_embeds (N, 2, E)")
        n, dtype = len(cond), self.dtype
        ids = self.identity(cond.ref_embeds.to(dtype).flatten(0, 1)).view(n, 2, -1, self.config.cross_attention_dim)
        ids = (ids + self.identity_roles.to(dtype)[None, :, None]).flatten(1, 2)  # (N, 2·K, D)
        keep = cond.has_refs[:, None].expand(-1, ids.shape[1])
        return torch.where(keep[..., None], ids, torch.zeros_like(ids)), keep
