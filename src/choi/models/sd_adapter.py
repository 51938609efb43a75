"""choi-sd's trainable stage-2 parts around a frozen Stable Diffusion 1.x UNet, as ONE module.

- **layout branch**, one of :data:`LAYOUTS`:
  ``controlnet`` (the default): a ControlNet made from the base UNet (``ControlNetModel.from_unet``:
  a copy of its encoder, zero-initialised output convs, so training starts from the base's own
  behaviour), fed the conditioning image of :data:`CONDITIONING_CHANNELS`;
  ``inpaint``: no ControlNet. An inpainting UNet (9 channels) takes the region and the background
  through its own mask and masked-image channels, and the person and object masks enter as 2 more
  input channels of its ``conv_in``: a zero-initialised conv held here (:class:`LayoutChannels`),
  added to the frozen ``conv_in`` (:class:`ExtendedConvIn`) — the same as ``conv_in`` grown by 2
  zero-initialised channels, without a second copy of the frozen weights;
- **identity**: the person's and the object's embedding from a frozen encoder (:data:`IDENTITY_ENCODERS`:
  the IP-Adapter's CLIP image encoder, or DINOv2's CLS token), each through its own
  ``ImageProjection`` (IP-Adapter's ``image_proj``) to reference tokens;
- **decoupled cross-attention**: diffusers' ``IPAdapterAttnProcessor2_0`` on every cross-attention
  layer of the UNet with two token sets (person = 0, object = 1), each confined to its role's
  region by per-sample ``ip_adapter_masks``; the text cross-attention stays as it was;
- optionally **LoRA** (peft) on the frozen UNet's attention projections, its A and B held here.

The frozen UNet is held, not registered: ``state_dict()`` and the optimiser see only the trainables,
and the processors the UNet runs are the module's own ``ip_layers``.

Example:
    >>> adapter = SDAdapter.from_base(unet, ip_adapter_state)  # dict of the IP-Adapter file, or None
    >>> adapter.attach(unet)  # after the UNet is on its device and in its dtype
    >>> eps = adapter(latents, t, text_embeds, image_embeds, control, role_masks)
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import ControlNetModel, UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention_processor import AttnProcessor2_0, IPAdapterAttnProcessor2_0
from diffusers.models.embeddings import ImageProjection
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

# person mask, object mask, known-background mask, background RGB (in [-1, 1], 0 where unknown)
CONDITIONING_CHANNELS = 6
ROLES = ("person", "object")
LAYOUTS = ("controlnet", "inpaint")  # how the layout and the background reach the UNet
IDENTITY_ENCODERS = ("clip", "dinov2")  # what embeds the references
# ControlNet's conditioning encoder widths for SD's 8x VAE; a VAE that downsamples less keeps fewer
CONDITIONING_WIDTHS = (16, 32, 96, 256)
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # the UNet's attention projections, as diffusers' LoRA scripts


def layout_control(masks: torch.Tensor, region: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """The ControlNet's input, in training and at inference alike: (N, 6, H, W) from the (N, 2, H, W)
    person/object masks, the (N, 1, H, W) region to paint (1 everywhere when no background is known)
    and the (N, 3, H, W) background in [0, 1]."""
    known = 1 - region
    return torch.cat([masks, known, (background * 2 - 1) * known], 1)


def identity_embeds(encoder: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """(N, D) reference embeddings: CLIP's projected image embedding, or DINOv2's CLS token after its
    final layer norm (``pooler_output``). The same function in training and at inference."""
    out = encoder(pixel_values=pixel_values)
    embeds = getattr(out, "image_embeds", None)
    return out.pooler_output if embeds is None else embeds


class LayoutChannels(nn.Module):
    """The person and object masks as 2 more input channels of the UNet's ``conv_in``: a conv from them
    to ``conv_in``'s width, zero at start. ``masks`` (N, 2, H, W) at pixel size is set before each UNet call."""

    def __init__(self, width: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv2d(len(ROLES), width, kernel, padding=kernel // 2)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.masks: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """What the 2 channels add to ``conv_in(x)``, for ``x`` (B, C, h, w); B a multiple of the masks' N (CFG)."""
        if self.masks is None:
            raise RuntimeError("LayoutChannels: set the person/object masks before the UNet runs")
        masks = F.interpolate(self.masks.to(x.device, self.conv.weight.dtype), size=x.shape[-2:], mode="area")
        return self.conv(masks.repeat(x.shape[0] // masks.shape[0], 1, 1, 1))  # (B, width, h, w)


class ExtendedConvIn(nn.Module):
    """The frozen ``conv_in`` plus :class:`LayoutChannels`: what the UNet runs in place of its ``conv_in``."""

    def __init__(self, conv_in: nn.Conv2d, layout: LayoutChannels):
        super().__init__()
        self.conv_in, self.layout = conv_in, layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_in(x)
        return out + self.layout(x).to(out.dtype)


class SDAdapter(ModelMixin, ConfigMixin):
    """Layout branch + two role projections + the IP-Adapter attention processors of one UNet.

    Args:
        controlnet_config: the ControlNet's config (what ``ControlNetModel.from_unet`` made); None with
            ``layout="inpaint"``.
        ip_layer_names: the UNet's cross-attention processor names, in ``attn_processors`` order (a list:
            diffusers sorts the keys of a config's dicts, and the order numbers the IP-Adapter's layers).
        ip_layer_widths: their hidden sizes.
        cross_attention_dim: the UNet's cross-attention width (the text encoder's).
        image_embed_dim: the identity encoder's embedding width (CLIP's projection, DINOv2's hidden size).
        num_tokens: reference tokens per role (IP-Adapter SD1.5: 4).
        lora_rank: rank of the optional LoRA on the frozen UNet's attention projections (0: none).
        lora_targets: the UNet's Linear layers that carry it; ``lora_shapes``: their (in, out) features.
        layout: one of :data:`LAYOUTS`; ``conv_in_shape``: with ``inpaint``, the UNet's ``conv_in``
            (out channels, kernel) that :class:`LayoutChannels` adds to.
        identity_encoder: one of :data:`IDENTITY_ENCODERS`, the encoder the projections were trained on.
    """

    @register_to_config
    def __init__(
        self,
        controlnet_config: dict[str, Any] | None,
        ip_layer_names: list[str],
        ip_layer_widths: list[int],
        cross_attention_dim: int,
        image_embed_dim: int,
        num_tokens: int = 4,
        lora_rank: int = 0,
        lora_targets: list[str] | None = None,
        lora_shapes: list[list[int]] | None = None,
        layout: str = "controlnet",
        conv_in_shape: list[int] | None = None,
        identity_encoder: str = "clip",
    ):
        super().__init__()
        if layout not in LAYOUTS or identity_encoder not in IDENTITY_ENCODERS:
            raise ValueError(f"SDAdapter: layout {layout!r}, identity_encoder {identity_encoder!r}")
        self.controlnet = ControlNetModel.from_config(controlnet_config) if layout == "controlnet" else None
        self.layout_channels = LayoutChannels(*conv_in_shape) if layout == "inpaint" else None
        self.person_proj = ImageProjection(image_embed_dim, cross_attention_dim, num_tokens)
        self.object_proj = ImageProjection(image_embed_dim, cross_attention_dim, num_tokens)
        self.ip_layers = nn.ModuleList(
            IPAdapterAttnProcessor2_0(width, cross_attention_dim, num_tokens=[num_tokens] * len(ROLES), scale=1.0)
            for width in ip_layer_widths
        )
        # LoRA's A (kaiming-uniform, nn.Linear's own init, as peft's) and B (zero: the base unchanged at start)
        self.lora = nn.ModuleList(
            nn.ModuleList([nn.Linear(fan_in, lora_rank, bias=False), nn.Linear(lora_rank, fan_out, bias=False)])
            for fan_in, fan_out in (lora_shapes or [])
        )
        for _, up in self.lora:
            nn.init.zeros_(up.weight)
        self._unet: list[UNet2DConditionModel] = []  # a list, so the frozen UNet is not a submodule

    @classmethod
    def from_base(
        cls, unet: UNet2DConditionModel, ip_adapter: dict[str, torch.Tensor] | None, image_embed_dim: int,
        vae_factor: int = 8, lora_rank: int = 0, layout: str = "controlnet", identity_encoder: str = "clip",
    ) -> SDAdapter:  # fmt: skip
        """A new adapter for ``unet``: the ControlNet copied from it (``layout="controlnet"``) or zero
        layout channels (``"inpaint"``, an inpainting UNet only); both roles' processors from the
        IP-Adapter file's ``ip_adapter.*`` and, with CLIP, their projections from its ``image_proj.*``
        (random without the file, and DINOv2's always: IP-Adapter's projection takes CLIP embeddings)."""
        if layout == "inpaint":
            return cls._new(unet, None, ip_adapter, image_embed_dim, lora_rank, layout, identity_encoder)
        steps = int(math.log2(vae_factor))  # the conditioning encoder brings pixels to the latent size
        controlnet = ControlNetModel.from_unet(
            unet,
            conditioning_channels=CONDITIONING_CHANNELS,
            conditioning_embedding_out_channels=CONDITIONING_WIDTHS[: steps + 1],
        )
        latent_channels = unet.config.out_channels
        if controlnet.config.in_channels != latent_channels:  # an inpainting UNet's 9 input channels
            # the ControlNet sees the noisy latents alone, as diffusers' ControlNet inpainting pipeline feeds it
            conv = controlnet.conv_in
            controlnet.conv_in = nn.Conv2d(latent_channels, conv.out_channels, conv.kernel_size, padding=conv.padding)
            controlnet.conv_in.weight.data.copy_(conv.weight[:, :latent_channels])
            controlnet.conv_in.bias.data.copy_(conv.bias)
            controlnet.register_to_config(in_channels=latent_channels)
        return cls._new(unet, controlnet, ip_adapter, image_embed_dim, lora_rank, layout, identity_encoder)

    @classmethod
    def _new(
        cls, unet: UNet2DConditionModel, controlnet: ControlNetModel | None, ip_adapter: dict[str, torch.Tensor] | None,
        image_embed_dim: int, lora_rank: int, layout: str, identity_encoder: str,
    ) -> SDAdapter:  # fmt: skip
        cross = [name for name in unet.attn_processors if not name.endswith("attn1.processor")]
        widths = [unet.get_submodule(name.removesuffix(".processor")).to_q.out_features for name in cross]
        num_tokens = 4
        if ip_adapter is not None:
            num_tokens = ip_adapter["image_proj.proj.weight"].shape[0] // unet.config.cross_attention_dim
        lora = {}
        if lora_rank:
            targets = [name for name, m in unet.named_modules() if isinstance(m, nn.Linear) and ".attn" in name
                       and name.endswith(tuple(f".{t}" for t in LORA_TARGETS))]  # fmt: skip
            shapes = [[unet.get_submodule(n).in_features, unet.get_submodule(n).out_features] for n in targets]
            lora = {"lora_rank": lora_rank, "lora_targets": targets, "lora_shapes": shapes}
        config = None if controlnet is None else dict(controlnet.config)
        conv_in = [unet.conv_in.out_channels, unet.conv_in.kernel_size[0]] if layout == "inpaint" else None
        adapter = cls(config, cross, widths, unet.config.cross_attention_dim, image_embed_dim, num_tokens, **lora,
                      layout=layout, conv_in_shape=conv_in, identity_encoder=identity_encoder)  # fmt: skip
        if controlnet is not None:
            adapter.controlnet.load_state_dict(controlnet.state_dict())
        if ip_adapter is not None:
            adapter.load_ip_adapter(ip_adapter, projections=identity_encoder == "clip")
        return adapter

    def load_ip_adapter(self, state: dict[str, torch.Tensor], projections: bool = True) -> None:
        """Both roles start as the IP-Adapter: its ``image_proj`` (``proj`` is diffusers' ``image_embeds``;
        only with ``projections``: it takes CLIP embeddings) and, per cross-attention layer ``k`` in
        UNet order, its ``ip_adapter.{2k+1}.to_k_ip/to_v_ip`` (the original numbering counts
        self-attentions too, as diffusers' loader does)."""
        if projections:
            proj = {k.removeprefix("image_proj.").replace("proj.", "image_embeds."): v for k, v in state.items()
                    if k.startswith("image_proj.")}  # fmt: skip
            self.person_proj.load_state_dict(proj)
            self.object_proj.load_state_dict(proj)
        for k, layer in enumerate(self.ip_layers):
            for role in range(len(ROLES)):
                layer.to_k_ip[role].weight.data.copy_(state[f"ip_adapter.{2 * k + 1}.to_k_ip.weight"])
                layer.to_v_ip[role].weight.data.copy_(state[f"ip_adapter.{2 * k + 1}.to_v_ip.weight"])

    def attach(self, unet: UNet2DConditionModel) -> None:
        """Run ``unet`` with this adapter's processors (call it after the UNet's last ``.to(dtype)``:
        that would cast them too)."""
        names = self.config.ip_layer_names
        layers = dict(zip(names, self.ip_layers, strict=True))
        unet.set_attn_processor({name: layers.get(name, AttnProcessor2_0()) for name in unet.attn_processors})
        if self.config.lora_rank:
            self._attach_lora(unet)
        if self.layout_channels is not None:
            conv_in = unet.conv_in.conv_in if isinstance(unet.conv_in, ExtendedConvIn) else unet.conv_in
            unet.conv_in = ExtendedConvIn(conv_in, self.layout_channels)
        self._unet[:] = [unet]

    def set_layout(self, masks: torch.Tensor) -> None:
        """With ``layout="inpaint"``: the (N, 2, H, W) person/object masks the UNet's next calls take."""
        self.layout_channels.masks = masks

    def _attach_lora(self, unet: UNet2DConditionModel) -> None:
        """peft's LoRA layers around the UNet's attention projections, running this module's own A and B."""
        from peft import LoraConfig, inject_adapter_in_model
        from peft.tuners.lora import LoraLayer

        targets = self.config.lora_targets
        if not isinstance(unet.get_submodule(targets[0]), LoraLayer):
            rank = self.config.lora_rank
            config = LoraConfig(r=rank, lora_alpha=rank, target_modules=list(targets), lora_dropout=0.0)
            trainable = [p.requires_grad for p in self.parameters()]
            inject_adapter_in_model(config, unet)  # it freezes every UNet parameter not its own: our processors too
            for param, flag in zip(self.parameters(), trainable, strict=True):
                param.requires_grad_(flag)
        for name, (down, up) in zip(targets, self.lora, strict=True):
            layer = unet.get_submodule(name)
            layer.lora_A["default"], layer.lora_B["default"] = down, up

    def enable_gradient_checkpointing(self) -> None:
        """Recompute activations in backward, in the ControlNet and in the frozen UNet the gradients cross."""
        if self.controlnet is not None:
            self.controlnet.enable_gradient_checkpointing()
        self.unet.enable_gradient_checkpointing()

    @property
    def unet(self) -> UNet2DConditionModel:
        if not self._unet:
            raise RuntimeError("SDAdapter: attach(unet) first")
        return self._unet[0]

    def reference_tokens(self, image_embeds: torch.Tensor) -> list[torch.Tensor]:
        """(N, 2, D) person/object identity embeddings → per role (N, 1, T, C): one image per role."""
        return [proj(image_embeds[:, k].to(proj.image_embeds.weight.dtype))[:, None]
                for k, proj in enumerate((self.person_proj, self.object_proj))]  # fmt: skip

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        text_embeds: torch.Tensor,
        image_embeds: torch.Tensor,
        control: torch.Tensor | None,
        role_masks: torch.Tensor,
        inpaint: torch.Tensor | None = None,
        conditioning_scale: float = 1.0,
    ) -> torch.Tensor:
        """The UNet's prediction for the noisy latents ``sample`` (N, 4, h, w) at ``timestep`` (N,).

        ``text_embeds`` (N, L, C); ``image_embeds`` (N, 2, D); ``control`` (N, 6, H, W) at pixel size
        (the ControlNet's; None with ``layout="inpaint"``); ``role_masks`` (N, 2, H, W) in [0, 1], where
        each role's reference tokens may act (and, with ``inpaint``, the layout channels); ``inpaint``
        (N, 5, h, w): an inpainting UNet's mask and masked-image latents (the ControlNet never sees them).
        """
        tokens = self.reference_tokens(image_embeds)  # 2 x (N, 1, T, C)
        down = mid = None
        if self.controlnet is not None:
            down, mid = self.controlnet(
                sample, timestep, encoder_hidden_states=text_embeds, controlnet_cond=control,
                conditioning_scale=conditioning_scale, return_dict=False,
            )  # fmt: skip
        else:
            self.set_layout(role_masks)
        masks = [role_masks[:, k : k + 1] for k in range(len(ROLES))]  # (N, 1, H, W): one image per role
        return self.unet(
            sample if inpaint is None else torch.cat([sample, inpaint.to(sample.dtype)], 1),
            timestep,
            encoder_hidden_states=(text_embeds, tokens),
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
            cross_attention_kwargs={"ip_adapter_masks": masks},
            return_dict=False,
        )[0]
