"""What choi's two generators share: a diffusers ``UNet2DConditionModel`` over space-to-depth patches,
conditioned by cross-attention tokens (text, then role-tagged references), extra input channels and a
vector added to the timestep embedding (``class_embed_type="projection"``); and named presets.

:class:`~choi.models.mask_generator.MaskGenerator` and
:class:`~choi.models.image_generator.ImageGenerator` differ only in how they turn their conditions
into :class:`EncodedConditions` and in their channel counts. Each one's ``__init__`` (registered with
``register_to_config``) is the one list of its parameters and defaults; a preset names only what
differs from them, DiT-style.

Example:
    >>> MaskGenerator.preset_config("small")["patch_size"]
    2
    >>> model = MaskGenerator.from_preset("tiny", sample_size=96)
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin, UNet2DConditionModel
from torch import nn

from choi.errors import ChoiError
from choi.models.conditioning import RoleTokens


@dataclass
class EncodedConditions:
    """Conditions turned into network inputs once per sampling run, reused at every step."""

    context: torch.Tensor  # (N, T, D) cross-attention tokens: text, then human and object references
    context_mask: torch.Tensor  # (N, T) float, 1 for tokens to attend to
    extra: torch.Tensor  # (N, C, S, S) condition channels concatenated to the noisy sample
    vector: torch.Tensor  # (N, V) pooled text, box coordinates and flags → timestep embedding

    def cat(self, other: EncodedConditions) -> EncodedConditions:
        """Stack two batches (conditional + unconditional) for one guided forward pass."""
        return type(self)(*(torch.cat([getattr(self, f.name), getattr(other, f.name)]) for f in fields(self)))


class ConditionalDenoiser(ModelMixin, ConfigMixin):
    """The shared network; a subclass sets ``presets`` and ``preset_kind``, calls :meth:`_build` from
    its registered ``__init__`` and writes ``encode_conditions``."""

    presets: ClassVar[Mapping[str, Mapping[str, Any]]]  # name → overrides of the __init__ defaults
    preset_kind: ClassVar[str]  # "mask", "image": names the model in error messages

    @classmethod
    def init_defaults(cls) -> dict[str, Any]:
        params = inspect.signature(cls.__init__).parameters  # follows register_to_config's wrapper
        return {k: p.default for k, p in params.items() if k != "self" and p.default is not inspect.Parameter.empty}

    @classmethod
    def preset_config(cls, name: str, **overrides: Any) -> dict[str, Any]:
        """Every ``__init__`` argument: its default, then preset ``name``'s value, then ``overrides``."""
        if name not in cls.presets:
            raise ChoiError(f"unknown {cls.preset_kind} model config '{name}'; choose from {', '.join(cls.presets)}")
        defaults = cls.init_defaults()
        unknown = sorted(set(overrides) - set(defaults))
        if unknown:
            raise ChoiError(f"{cls.__name__} has no parameter {', '.join(unknown)}; known: {', '.join(defaults)}")
        return {**defaults, **cls.presets[name], **overrides}

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> Any:
        """A randomly initialised model of preset ``name`` with ``overrides``."""
        return cls(**cls.preset_config(name, **overrides))

    def _build(self, sample_channels: int, extra_channels: int, ref_channels: int, num_flags: int, refine: bool):
        """Text projection, reference tokens, null tokens and the UNet, from the registered config."""
        cfg = self.config
        if cfg.sample_size % cfg.patch_size:
            raise ChoiError(f"sample_size {cfg.sample_size} is not a multiple of patch_size {cfg.patch_size}")
        dim, p2 = cfg.cross_attention_dim, cfg.patch_size * cfg.patch_size
        self.text_proj = nn.Linear(cfg.text_dim, dim)
        self.refs = RoleTokens(ref_channels, cfg.ref_size, cfg.ref_grid, dim, refine=refine)  # role-tagged
        self.null_text = nn.Parameter(torch.randn(dim) * 0.02)
        self.null_refs = nn.Parameter(torch.randn(2, dim) * 0.02)
        self.unet = UNet2DConditionModel(
            sample_size=cfg.sample_size // cfg.patch_size,
            in_channels=(sample_channels + extra_channels) * p2,  # space-to-depth
            out_channels=sample_channels * p2,
            block_out_channels=tuple(cfg.block_out_channels),
            down_block_types=tuple(cfg.down_block_types),
            up_block_types=tuple(cfg.up_block_types),
            mid_block_type=cfg.mid_block_type,
            layers_per_block=cfg.layers_per_block,
            norm_num_groups=cfg.norm_num_groups,
            cross_attention_dim=dim,
            attention_head_dim=cfg.attention_head_dim,
            class_embed_type="projection",
            projection_class_embeddings_input_dim=cfg.text_dim + 4 + num_flags,  # pooled text, box, flags
        )

    def encode_conditions(self, cond) -> EncodedConditions:
        raise NotImplementedError

    def denoise(self, sample: torch.Tensor, timestep: torch.Tensor, enc: EncodedConditions) -> torch.Tensor:
        """The network prediction for noisy samples (N, C, S, S) at ``timestep`` (N,) or scalar."""
        p = self.config.patch_size
        x = F.pixel_unshuffle(torch.cat([sample.to(self.dtype), enc.extra], 1), p)  # (N, (C + extra)·p², S/p, S/p)
        out = self.unet(
            x,
            timestep,
            encoder_hidden_states=enc.context,
            class_labels=enc.vector,
            encoder_attention_mask=enc.context_mask,
        ).sample  # (N, C·p², S/p, S/p)
        return F.pixel_shuffle(out, p)  # (N, C, S, S)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, cond) -> torch.Tensor:
        return self.denoise(sample, timestep, self.encode_conditions(cond))
