"""choi-sd's trainable stage-2 parts around a frozen Stable Diffusion 1.x UNet, as ONE module.

- **layout branch**: a ControlNet made from the base UNet (``ControlNetModel.from_unet``: a copy of
  its encoder, zero-initialised output convs, so training starts from the base's own behaviour),
  fed the conditioning image of :data:`CONDITIONING_CHANNELS`;
- **identity**: the person's and the object's CLIP image embeddings, each through its own
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
from diffusers import ControlNetModel, UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention_processor import AttnProcessor2_0, IPAdapterAttnProcessor2_0
from diffusers.models.embeddings import ImageProjection
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

# person mask, object mask, known-background mask, background RGB (in [-1, 1], 0 where unknown)
CONDITIONING_CHANNELS = 6
ROLES = ("person", "object")
# ControlNet's conditioning encoder widths for SD's 8x VAE; a VAE that downsamples less keeps fewer
CONDITIONING_WIDTHS = (16, 32, 96, 256)
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # the UNet's attention projections, as diffusers' LoRA scripts


def layout_control(masks: torch.Tensor, region: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """The ControlNet's input, in training and at inference alike: (N, 6, H, W) from the (N, 2, H, W)
    person/object masks, the (N, 1, H, W) region to paint (1 everywhere when no background is known)
    and the (N, 3, H, W) background in [0, 1]."""
    known = 1 - region
    return torch.cat([masks, known, (background * 2 - 1) * known], 1)


class SDAdapter(ModelMixin, ConfigMixin):
    """Layout ControlNet + two role projections + the IP-Adapter attention processors of one UNet.

    Args:
        controlnet_config: the ControlNet's config (what ``ControlNetModel.from_unet`` made).
        ip_layer_names: the UNet's cross-attention processor names, in ``attn_processors`` order (a list:
            diffusers sorts the keys of a config's dicts, and the order numbers the IP-Adapter's layers).
        ip_layer_widths: their hidden sizes.
        cross_attention_dim: the UNet's cross-attention width (the text encoder's).
        image_embed_dim: the CLIP image encoder's projection width.
        num_tokens: reference tokens per role (IP-Adapter SD1.5: 4).
        lora_rank: rank of the optional LoRA on the frozen UNet's attention projections (0: none).
        lora_targets: the UNet's Linear layers that carry it; ``lora_shapes``: their (in, out) features.
    """

    @register_to_config
    def __init__(
        self,
        controlnet_config: dict[str, Any],
        ip_layer_names: list[str],
        ip_layer_widths: list[int],
        cross_attention_dim: int,
        image_embed_dim: int,
        num_tokens: int = 4,
        lora_rank: int = 0,
        lora_targets: list[str] | None = None,
        lora_shapes: list[list[int]] | None = None,
    ):
        super().__init__()
        self.controlnet = ControlNetModel.from_config(controlnet_config)
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
        vae_factor: int = 8, lora_rank: int = 0,
    ) -> SDAdapter:  # fmt: skip
        """A new adapter for ``unet``: the ControlNet copied from it; both roles' projections and
        processors from the IP-Adapter file's ``image_proj.*`` / ``ip_adapter.*`` (random without one)."""
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
        config = dict(controlnet.config)
        adapter = cls(config, cross, widths, unet.config.cross_attention_dim, image_embed_dim, num_tokens, **lora)
        adapter.controlnet.load_state_dict(controlnet.state_dict())
        if ip_adapter is not None:
            adapter.load_ip_adapter(ip_adapter)
        return adapter

    def load_ip_adapter(self, state: dict[str, torch.Tensor]) -> None:
        """Both roles start as the IP-Adapter: its ``image_proj`` (``proj`` is diffusers' ``image_embeds``)
        and, per cross-attention layer ``k`` in UNet order, its ``ip_adapter.{2k+1}.to_k_ip/to_v_ip``
        (the original numbering counts self-attentions too, as diffusers' loader does)."""
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
        self._unet[:] = [unet]

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
        self.controlnet.enable_gradient_checkpointing()
        self.unet.enable_gradient_checkpointing()

    @property
    def unet(self) -> UNet2DConditionModel:
        if not self._unet:
            raise RuntimeError("SDAdapter: attach(unet) first")
        return self._unet[0]

    def reference_tokens(self, image_embeds: torch.Tensor) -> list[torch.Tensor]:
        """(N, 2, D) person/object CLIP image embeddings → per role (N, 1, T, C): one image per role."""
        return [proj(image_embeds[:, k].to(proj.image_embeds.weight.dtype))[:, None]
                for k, proj in enumerate((self.person_proj, self.object_proj))]  # fmt: skip

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        text_embeds: torch.Tensor,
        image_embeds: torch.Tensor,
        control: torch.Tensor,
        role_masks: torch.Tensor,
        inpaint: torch.Tensor | None = None,
        conditioning_scale: float = 1.0,
    ) -> torch.Tensor:
        """The UNet's prediction for the noisy latents ``sample`` (N, 4, h, w) at ``timestep`` (N,).

        ``text_embeds`` (N, L, C); ``image_embeds`` (N, 2, D); ``control`` (N, 6, H, W) at pixel size;
        ``role_masks`` (N, 2, H, W) in [0, 1], where each role's reference tokens may act; ``inpaint``
        (N, 5, h, w): an inpainting UNet's mask and masked-image latents (the ControlNet never sees them).
        """
        tokens = self.reference_tokens(image_embeds)  # 2 x (N, 1, T, C)
        down, mid = self.controlnet(
            sample, timestep, encoder_hidden_states=text_embeds, controlnet_cond=control,
            conditioning_scale=conditioning_scale, return_dict=False,
        )  # fmt: skip
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
