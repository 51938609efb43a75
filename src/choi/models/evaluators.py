"""Evaluator networks trained on HOI-World ground truth: they judge generated images.

- :class:`InteractionRecognizer` — image (or a 2-channel human/object mask pair) → class logits.
  The same class serves as the mask-only recognizer with ``in_channels=2``.
- :class:`IdentityEmbedder` — image → one human-identity and one object-identity embedding. It
  finds the person and the object itself (learned attention pooling), so scoring a generated
  image needs nothing but the image: no ground-truth masks or boxes.

All take float images in [0, 1], shape (N, C, H, W).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn


class ResBlock(nn.Module):
    """Pre-activation residual block; GroupNorm because evaluator batches can be small."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(8, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1)
        self.norm2 = nn.GroupNorm(8, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.skip = nn.Identity() if (cin == cout and stride == 1) else nn.Conv2d(cin, cout, 1, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


class ConvBackbone(nn.Module):
    """Stem (stride 2) + one residual block per width, all but the first strided.

    Inputs of any size are first resized to ``input_size``: the evaluators then judge 64, 128 and
    256 px images alike, and 64 px keeps CPU training affordable while layout, colours and
    patterns stay visible.
    """

    def __init__(self, in_channels: int, widths: tuple[int, ...], input_size: int):
        super().__init__()
        self.input_size = input_size
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 2, 1)  # halve early: CPU budget
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths):
            blocks.append(ResBlock(cin, w, stride=1 if i == 0 else 2))
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.norm = nn.GroupNorm(8, cin)
        self.out_channels = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", antialias=True)
        x = self.stem(x * 2.0 - 1.0)  # [0, 1] → [-1, 1]
        return F.silu(self.norm(self.blocks(x)))  # (N, C, H/2^len(widths), W/2^len(widths))


class InteractionRecognizer(ModelMixin, ConfigMixin):
    """Interaction class logits from an RGB image (in_channels=3) or human/object masks (in_channels=2).

    Example:
        >>> net = InteractionRecognizer(in_channels=3, num_classes=26)
        >>> net(torch.rand(2, 3, 128, 128)).shape
        torch.Size([2, 26])
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 26,
        widths: tuple[int, ...] = (32, 64, 128, 192),
        input_size: int = 64,
    ):
        super().__init__()
        self.backbone = ConvBackbone(in_channels, tuple(widths), input_size)
        self.head = nn.Linear(self.backbone.out_channels, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features (N, D): also the feature space for FID/KID."""
        return self.backbone(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (N, num_classes)


class IdentityEmbedder(ModelMixin, ConfigMixin):
    """Human- and object-identity embeddings (unit norm) from a scene or a reference image.

    Each role has a learned attention map over the feature grid, so the network locates the
    person and the object by itself. During training the maps may be supervised with masks;
    at scoring time only the image is used.

    Example:
        >>> emb = IdentityEmbedder()
        >>> out = emb(torch.rand(2, 3, 128, 128))
        >>> out["human"].shape, out["object"].shape
        (torch.Size([2, 128]), torch.Size([2, 128]))
    """

    roles = ("human", "object")

    @register_to_config
    def __init__(self, widths: tuple[int, ...] = (32, 64, 128), embed_dim: int = 128, input_size: int = 64):
        super().__init__()
        # Fewer strided stages than the recognizer: identity lives in colours and textures, and a
        # 8×8 grid (at 64 px) lets the attention separate a small object from the person.
        self.backbone = ConvBackbone(3, tuple(widths), input_size)
        c = self.backbone.out_channels
        self.attention = nn.Conv2d(c, len(self.roles), 1)
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(2 * c, 2 * c), nn.SiLU(), nn.Linear(2 * c, embed_dim)) for _ in self.roles
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feat = self.backbone(x)  # (N, C, h, w)
        logits = self.attention(feat)  # (N, 2, h, w)
        weights = logits.flatten(2).softmax(-1)  # (N, 2, h*w)
        flat = feat.flatten(2)  # (N, C, h*w)
        out: dict[str, torch.Tensor] = {}
        for i, role in enumerate(self.roles):
            w = weights[:, i : i + 1]  # (N, 1, h*w)
            mean = (flat * w).sum(-1)  # (N, C)
            second = (flat.square() * w).sum(-1) - mean.square()  # colour/texture spread
            pooled = torch.cat([mean, second.clamp_min(0).sqrt()], dim=1)
            out[role] = F.normalize(self.heads[i](pooled), dim=-1)
            out[f"{role}_attention"] = logits[:, i]  # (N, h, w) logits, for mask supervision
        return out
