"""Evaluator networks trained on HOI-World ground truth: they judge generated images.

- :class:`InteractionRecognizer` — image (or a 2-channel human/object mask pair) → class logits.
  The same class serves as the mask-only recognizer with ``in_channels=2``.
- :class:`IdentityEmbedder` — image → one human-identity and one object-identity embedding. It
  finds the person and the object itself (a small segmenter, then a full-resolution glimpse of
  each), so scoring a generated image needs nothing but the image: no ground-truth masks or boxes.
  Its scoring embedding also carries a colour histogram of each located segment
  (:func:`colour_histogram`).

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

    def __init__(self, in_channels: int, widths: tuple[int, ...], input_size: int, stem_stride: int = 2):
        super().__init__()
        self.input_size = input_size
        self.stem = nn.Conv2d(in_channels, widths[0], 3, stem_stride, 1)  # 2: halve early, CPU budget
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
        return self.trunk(x * 2.0 - 1.0)  # [0, 1] → [-1, 1]

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Features of an input already at its size and scale: (N, C, H/s/2^(len(widths)-1), ...)."""
        return F.silu(self.norm(self.blocks(self.stem(x))))


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


def at_half_peak(soft: torch.Tensor) -> torch.Tensor:
    """Where each soft mask (..., h, w) reaches half its own peak: a segment's cells, faint or not."""
    return soft >= 0.5 * soft.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-6)


def role_boxes(soft: torch.Tensor, margin: float = 0.15, min_side: float = 0.125) -> torch.Tensor:
    """Square crop boxes (N, R, 3) = (centre x, centre y, half side), in [-1, 1] image coordinates,
    around the cells of each soft mask (N, R, h, w) that reach half that mask's peak.

    Half the peak rather than a fixed 0.5: a small object covers only part of its coarsest cells.
    """
    h, w = soft.shape[-2:]
    on = at_half_peak(soft)
    cols, rows = on.any(-2), on.any(-1)  # (N, R, w), (N, R, h)

    def extent(hit: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.arange(size, device=soft.device, dtype=soft.dtype)
        lo = torch.where(hit, idx, torch.full_like(idx, size)).amin(-1)
        hi = torch.where(hit, idx, torch.full_like(idx, -1)).amax(-1) + 1
        return lo * 2 / size - 1, hi * 2 / size - 1  # cell edges in [-1, 1]

    x0, x1 = extent(cols, w)
    y0, y1 = extent(rows, h)
    half = torch.maximum(x1 - x0, y1 - y0) * (0.5 + margin)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, half.clamp(min=min_side)], -1)


def glimpse(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop ``boxes`` (N, 3) from ``x`` (N, C, H, W) and resample each to ``size``×``size``.

    Sampled at twice the size and average-pooled, so large crops (a reference object filling its
    image) are not aliased; outside the image reads as zeros.
    """
    n = x.shape[0]
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = boxes[:, 2]
    theta[:, :, 2] = boxes[:, :2]
    grid = F.affine_grid(theta, [n, x.shape[1], 2 * size, 2 * size], align_corners=False)
    return F.avg_pool2d(F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False), 2)


def colour_histogram(x: torch.Tensor, soft: torch.Tensor, bins: int, power: float = 0.25) -> torch.Tensor:
    """Unit colour descriptors (N, bins³) of the pixels of images ``x`` (N, 3, H, W) in [0, 1]
    that reach half their soft mask's peak (``soft`` (N, h, w), resized to H×W), weighted by it.

    Each pixel is split trilinearly among the 8 nearest of ``bins`` levels per channel. The
    counts are raised to ``power`` before normalising, so a small second colour (a ball's
    stripe, a suitcase's band) weighs nearly as much as the main one: a different view shows
    the same colours in other proportions.

    Example:
        >>> red = torch.zeros(1, 3, 8, 8); red[:, 0] = 1.0
        >>> h = colour_histogram(red, torch.ones(1, 4, 4), bins=4)
        >>> h.shape, int(h.argmax()), float(h.max())  # all mass on (r, g, b) = (3, 0, 0)
        (torch.Size([1, 64]), 48, 1.0)
    """
    n = x.shape[0]
    w = F.interpolate(soft[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    w = torch.where(at_half_peak(w), w, torch.zeros_like(w))
    pos = x.clamp(0, 1).flatten(2) * (bins - 1)  # (N, 3, P) in level units
    lo = pos.floor().clamp(max=bins - 2)
    frac = pos - lo
    lo = lo.long()
    counts = torch.zeros(n, bins**3, device=x.device, dtype=x.dtype)
    for corner in range(8):
        up = [(corner >> c) & 1 for c in range(3)]
        index = sum((lo[:, c] + up[c]) * bins ** (2 - c) for c in range(3))
        weight = w.flatten(1)
        for c in range(3):
            weight = weight * (frac[:, c] if up[c] else 1 - frac[:, c])
        counts.scatter_add_(1, index, weight)
    counts = counts / counts.sum(1, keepdim=True).clamp_min(1e-12)
    return F.normalize(counts.pow(power), dim=-1)


class Locator(nn.Module):
    """Human/object segment logits (N, 2, H/4, W/4): a small U-Net, one strided stage per width.

    The coarse stages see far enough to tell a held cup from a window by the hand around it; the
    way back up adds each stage's features to the finer grid's.
    """

    def __init__(self, widths: tuple[int, ...]):
        super().__init__()
        self.stem = nn.Conv2d(3, widths[0], 3, 2, 1)
        self.down = nn.ModuleList()
        cin = widths[0]
        for w in widths:
            self.down.append(ResBlock(cin, w, stride=2))
            cin = w
        self.lateral = nn.ModuleList(nn.Conv2d(widths[i + 1], widths[i], 1) for i in range(len(widths) - 1))
        self.up = nn.ModuleList(ResBlock(w, w, stride=1) for w in widths[:-1])
        self.norm = nn.GroupNorm(8, widths[0])
        self.out = nn.Conv2d(widths[0], 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x * 2.0 - 1.0)
        skips = []
        for block in self.down:
            h = block(h)
            skips.append(h)
        for i in reversed(range(len(self.up))):  # coarse → fine
            h = self.up[i](skips[i] + F.interpolate(self.lateral[i](h), size=skips[i].shape[-2:], mode="nearest"))
        return self.out(F.silu(self.norm(h)))


class GlimpseEncoder(nn.Module):
    """Embedding of one role from its glimpse: RGB plus the role's soft mask as a 4th channel.

    Features are pooled twice: weighted by the (pooled) mask — the role's own colours and
    patterns, mean and spread — and over the whole glimpse for context.
    """

    def __init__(self, widths: tuple[int, ...], embed_dim: int, glimpse_size: int):
        super().__init__()
        self.backbone = ConvBackbone(4, widths, glimpse_size, stem_stride=1)
        cin = self.backbone.out_channels
        self.head = nn.Sequential(nn.Linear(3 * cin, 2 * cin), nn.SiLU(), nn.Linear(2 * cin, embed_dim))

    def forward(self, crop: torch.Tensor) -> torch.Tensor:
        rgb, mask = crop[:, :3], crop[:, 3:]
        feat = self.backbone.trunk(torch.cat([rgb * 2.0 - 1.0, mask], 1))  # the mask stays in [0, 1]
        w = F.adaptive_avg_pool2d(mask, feat.shape[-2:]).flatten(1)  # (N, h*w)
        w = w / w.sum(-1, keepdim=True).clamp_min(1e-6)
        flat = feat.flatten(2)  # (N, C, h*w)
        mean = (flat * w[:, None]).sum(-1)
        spread = ((flat.square() * w[:, None]).sum(-1) - mean.square()).clamp_min(0).sqrt()
        return F.normalize(self.head(torch.cat([mean, spread, flat.mean(-1)], 1)), dim=-1)


class IdentityEmbedder(ModelMixin, ConfigMixin):
    """Human- and object-identity embeddings (unit norm) from a scene or a reference image.

    Two steps, both from the image alone:

    1. a :class:`Locator` (a small U-Net, ``locator_widths`` finest first) segments the person
       and the object at a quarter of ``input_size``;
    2. for each role, a square *glimpse* around its segment is cropped from the full-resolution
       image and embedded by that role's :class:`GlimpseEncoder`.

    The glimpse makes the embedding scale-free: an object a few pixels wide in a scene and the
    same object filling its reference image are both seen at ``glimpse_size``. Training may place
    glimpses with true masks (:meth:`embed`); scoring uses :meth:`forward`, which never sees them.

    With ``colour_bins`` > 0, :meth:`forward` appends to each learned embedding the
    :func:`colour_histogram` of the role's located segment, scaled by ``colour_weight``, and
    normalises the whole: colours are most of what tells two identities apart, and a histogram
    keeps them whatever the view. Training (:meth:`embed`) learns the first part only.

    Example:
        >>> emb = IdentityEmbedder()
        >>> out = emb(torch.rand(2, 3, 128, 128))
        >>> out["human"].shape, out["object"].shape, out["human_attention"].shape
        (torch.Size([2, 128]), torch.Size([2, 128]), torch.Size([2, 32, 32]))
    """

    roles = ("human", "object")

    @register_to_config
    def __init__(
        self,
        locator_widths: tuple[int, ...] = (16, 32, 64),
        glimpse_widths: tuple[int, ...] = (24, 48, 96),
        glimpse_size: int = 32,
        embed_dim: int = 128,
        input_size: int = 128,
        object_factor_classes: tuple[int, ...] = (),
        colour_bins: int = 0,
        colour_weight: float = 0.0,
    ):
        super().__init__()
        if colour_bins == 1 or colour_bins < 0 or colour_weight < 0:
            raise ValueError(
                f"colour_bins must be 0 (off) or ≥ 2 and colour_weight ≥ 0; got {colour_bins}, {colour_weight}"
            )
        self.locator = Locator(tuple(locator_widths))
        self.encoders = nn.ModuleList(
            GlimpseEncoder(tuple(glimpse_widths), embed_dim, glimpse_size) for _ in self.roles
        )
        # Training-only probe: the object's visible factors (colours, pattern...) read linearly
        # from its embedding, so the embedding must keep what tells two similar objects apart.
        self.object_factors = nn.Linear(embed_dim, sum(object_factor_classes)) if object_factor_classes else None

    def object_factor_logits(self, embedding: torch.Tensor) -> list[torch.Tensor]:
        """One (N, classes) logit tensor per factor of ``object_factor_classes``, from unit object embeddings."""
        if self.object_factors is None:
            raise ValueError("this IdentityEmbedder has no object factor probe (object_factor_classes is empty)")
        scaled = embedding * self.config.embed_dim**0.5  # unit vectors → entries of order 1
        return list(self.object_factors(scaled).split(list(self.config.object_factor_classes), dim=-1))

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        size = self.config.input_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        return x

    def locate(self, x: torch.Tensor) -> torch.Tensor:
        """Human/object segment logits (N, 2, s/4, s/4) of images (N, 3, H, W) in [0, 1]."""
        return self.locator(self._resize(x))

    def embed(self, x: torch.Tensor, soft: torch.Tensor, roles: tuple[str, ...] = roles) -> dict[str, torch.Tensor]:
        """Unit embeddings of ``roles`` from images and their soft role masks (N, 2, h, w) in [0, 1]."""
        x = self._resize(x)
        size = self.config.input_size
        boxes = role_boxes(soft.detach())  # (N, 2, 3): where to look is not learned through the crop
        out: dict[str, torch.Tensor] = {}
        for i, role in enumerate(self.roles):
            if role in roles:
                role_mask = F.interpolate(soft[:, i : i + 1], size=(size, size), mode="bilinear")
                crop = glimpse(torch.cat([x, role_mask], 1), boxes[:, i], self.config.glimpse_size)
                out[role] = self.encoders[i](crop)
        return out

    def forward(self, x: torch.Tensor, roles: tuple[str, ...] = roles, mirror: bool = True) -> dict[str, torch.Tensor]:
        """Embeddings of ``roles`` of images (N, 3, H, W) in [0, 1], and the locator's logits
        (``<role>_attention``, (N, s/4, s/4)).

        With ``mirror`` each embedding is the normalised mean of the image's and its mirror
        image's: a person or an object is the same whichever way it faces, so a scene and a
        reference facing opposite ways compare as if they faced alike. With ``colour_bins`` the
        colour histogram follows (see the class).
        """
        x = self._resize(x)
        logits = self.locate(x)
        soft = logits.sigmoid()
        out = self.embed(x, soft, roles)
        if mirror:
            flipped = x.flip(-1)
            other = self.embed(flipped, self.locate(flipped).sigmoid(), roles)
            out = {role: F.normalize(out[role] + other[role], dim=-1) for role in out}
        if self.config.colour_bins:
            for i, role in enumerate(self.roles):
                if role in out:
                    colours = colour_histogram(x, soft[:, i], self.config.colour_bins)
                    out[role] = F.normalize(torch.cat([out[role], self.config.colour_weight * colours], -1), dim=-1)
        for i, role in enumerate(self.roles):
            out[f"{role}_attention"] = logits[:, i]
        return out
