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
  channels.

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

from choi.models.conditioning import box_coverage, drop_tokens, fit_silhouettes
from choi.models.denoiser import ConditionalDenoiser, EncodedConditions
from choi.models.text_encoder import TEXT_DIM, TEXT_ENCODER_NAME, TextEmbeddings

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

    @classmethod
    def build(
        cls,
        text: TextEmbeddings,
        ref_masks: torch.Tensor,
        box: torch.Tensor | None = None,
        background: torch.Tensor | None = None,
        has_box: torch.Tensor | None = None,
        has_background: torch.Tensor | None = None,
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
        return MaskConditions(**{k: v.to(device) for k, v in values.items()})


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
    ):
        super().__init__()
        # noisy masks (2) + box map (1) + background (3); reference silhouettes (1 channel)
        self._build(sample_channels=2, extra_channels=1 + 3, ref_channels=1, num_flags=NUM_FLAGS, refine=False)

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
