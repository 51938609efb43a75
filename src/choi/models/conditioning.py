"""Condition encoders shared by both stages: reference crops, box maps and role-tagged tokens.

Example:
    >>> crops = fit_to_box(ref_rgb, ref_mask, 64)  # each reference cropped to its subject, squared
    >>> cover = box_coverage(torch.tensor([[0.2, 0.3, 0.8, 0.9]]), 32)  # (1, 1, 32, 32)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def mask_bounds(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(M, 1, H, W) masks → x0, y0, x1, y1 pixel edges of each mask's box (M,) float, and empty (M,) bool.

    An empty mask gets the whole image.
    """
    _, _, h, w = masks.shape
    rows, cols = masks[:, 0].amax(-1) > 0.5, masks[:, 0].amax(-2) > 0.5  # (M, H), (M, W)
    ar_h, ar_w = torch.arange(h, device=masks.device), torch.arange(w, device=masks.device)
    empty = ~rows.any(-1)
    y0 = torch.where(empty, 0.0, torch.where(rows, ar_h, h).amin(-1).float())
    y1 = torch.where(empty, float(h), torch.where(rows, ar_h + 1, 0).amax(-1).float())
    x0 = torch.where(empty, 0.0, torch.where(cols, ar_w, w).amin(-1).float())
    x1 = torch.where(empty, float(w), torch.where(cols, ar_w + 1, 0).amax(-1).float())
    return x0, y0, x1, y1, empty


def _resample(images: torch.Tensor, theta: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear ``grid_sample`` of (M, C, H, W) on an affine output→input map; zero outside the image."""
    grid = F.affine_grid(theta, [images.shape[0], 1, size, size], align_corners=False)
    # Average-pool first so that a large subject is not aliased away by point sampling.
    factor = max(1, int(min(images.shape[-2:]) // (2 * size)))
    src = F.avg_pool2d(images.float(), factor) if factor > 1 else images.float()
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def fit_to_box(images: torch.Tensor, masks: torch.Tensor, size: int, margin: float = 0.08) -> torch.Tensor:
    """Crop each image to its mask's box (made square, plus a margin) and resize it to ``size``.

    The networks should learn what the reference *is* (build, colours, object form), not where or
    how large it happened to be drawn in the reference photo. Outside the image is zero.
    images (M, C, H, W) float, masks (M, 1, H, W) float {0, 1} → (M, C, size, size); an empty mask
    keeps the whole image.
    """
    m, _, h, w = images.shape
    x0, y0, x1, y1, _ = mask_bounds(masks)
    side = torch.maximum(x1 - x0, y1 - y0).clamp(min=1.0) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    theta = torch.zeros(m, 2, 3, device=images.device)
    theta[:, 0, 0], theta[:, 0, 2] = side / w, cx * 2 / w - 1
    theta[:, 1, 1], theta[:, 1, 2] = side / h, cy * 2 / h - 1
    return _resample(images, theta, size)


def warp_into_masks(images: torch.Tensor, masks: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Stretch each subject's box onto its target mask's box, kept only inside the target mask.

    A coarse, pose-blind first guess of what the target looks like (the reference's colours where
    the layout puts the subject), which stage 2 then corrects. images (M, 3, H, W) in [0, 1],
    masks (M, 1, H, W) their silhouettes, targets (M, 1, S, S) layout masks → (M, 4, S, S): the
    subject's colours premultiplied by its warped silhouette, then that silhouette (its coverage).
    An empty mask or target gives zeros.
    """
    m, _, h, w = images.shape
    size = targets.shape[-1]
    rx0, ry0, rx1, ry1, r_empty = mask_bounds(masks)
    tx0, ty0, tx1, ty1, t_empty = mask_bounds(targets)
    theta = torch.zeros(m, 2, 3, device=images.device)
    # output pixel edge coordinate u (target) maps to r0 + (u - t0) * (r1 - r0) / (t1 - t0) in the reference
    sx, sy = (rx1 - rx0) / w / ((tx1 - tx0) / size), (ry1 - ry0) / h / ((ty1 - ty0) / size)
    theta[:, 0, 0], theta[:, 0, 2] = sx, (rx0 * 2 / w - 1) - (tx0 * 2 / size - 1) * sx
    theta[:, 1, 1], theta[:, 1, 2] = sy, (ry0 * 2 / h - 1) - (ty0 * 2 / size - 1) * sy
    layers = _resample(torch.cat([images.float() * masks.float(), masks.float()], 1), theta, size)
    keep = targets.float() * (~(r_empty | t_empty)).float()[:, None, None, None]
    return layers * keep


def fit_silhouettes(masks: torch.Tensor, size: int, margin: float = 0.08) -> torch.Tensor:
    """Each channel of (N, C, H, W) silhouettes cropped to its own box: → (N, C, size, size) in [0, 1].

    Empty masks stay empty.
    """
    n, c, h, w = masks.shape
    flat = masks.reshape(n * c, 1, h, w).float()
    return fit_to_box(flat, flat, size, margin).reshape(n, c, size, size)


def box_coverage(box: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 4) normalised boxes → (N, 1, size, size) fraction of each pixel inside the box (sub-pixel exact)."""
    edges = torch.arange(size, device=box.device, dtype=box.dtype)

    def overlap(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:  # (N,) → (N, size)
        return (torch.minimum(edges + 1, hi[:, None] * size) - torch.maximum(edges, lo[:, None] * size)).clamp(0, 1)

    cov_x, cov_y = overlap(box[:, 0], box[:, 2]), overlap(box[:, 1], box[:, 3])
    return (cov_y[:, :, None] * cov_x[:, None, :])[:, None]


class RoleTokens(nn.Module):
    """Per-role images → role-tagged tokens: (N, R, C, S, S) → (N, R·G², D).

    One conv trunk for every role (stride-2 down to a G×G map), a learned position per cell and a
    learned embedding per role, so cross-attention can always tell whose token it reads.
    """

    def __init__(
        self, in_channels: int, size: int, grid: int, dim: int, roles: int = 2, width: int = 32, refine: bool = False
    ):
        super().__init__()
        layers: list[nn.Module] = []
        cin, res = in_channels, size
        while res > grid:
            layers += [nn.Conv2d(cin, width, 3, 2, 1), nn.GroupNorm(8, width), nn.SiLU()]
            cin, res, width = width, res // 2, min(2 * width, dim)
        if refine:  # one more 3x3 layer at the token grid: each token sees its neighbours
            layers += [nn.Conv2d(cin, cin, 3, 1, 1), nn.GroupNorm(8, cin), nn.SiLU()]
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Linear(cin, dim)
        self.pos = nn.Parameter(torch.randn(grid * grid, dim) * 0.02)
        self.role = nn.Parameter(torch.randn(roles, dim) * 0.02)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n, r = images.shape[:2]
        x = self.convs(images.flatten(0, 1))  # (N·R, C', G, G)
        tokens = self.proj(x.flatten(2).transpose(1, 2)) + self.pos  # (N·R, G², D)
        tokens = tokens.reshape(n, r, -1, tokens.shape[-1]) + self.role[None, :, None]
        return tokens.flatten(1, 2)


def drop_tokens(
    tokens: torch.Tensor, mask: torch.Tensor, keep: torch.Tensor, null: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace the tokens of rows where ``keep`` is False by ``null`` and let only the first be attended.

    tokens (N, T, D), mask (N, T) bool, keep (N,) bool, null (D,) or (T, D) → tokens, mask.
    """
    first = torch.zeros_like(mask, dtype=torch.bool)
    first[:, 0] = True
    k = keep[:, None]
    return torch.where(k[..., None], tokens, null.to(tokens.dtype)), torch.where(k, mask.bool(), first)


REGION_MARGIN = 0.06  # the generated region is the union box grown by this fraction of its size, plus 2 px


def expand_box(box: torch.Tensor, size: int, margin: float = REGION_MARGIN) -> torch.Tensor:
    """(N, 4) normalised boxes grown by ``margin`` of their width/height plus 2 pixels of a ``size`` image."""
    pad_x = (box[:, 2] - box[:, 0]) * margin + 2 / size
    pad_y = (box[:, 3] - box[:, 1]) * margin + 2 / size
    grown = torch.stack([box[:, 0] - pad_x, box[:, 1] - pad_y, box[:, 2] + pad_x, box[:, 3] + pad_y], 1)
    return grown.clamp(0, 1)


def generation_region(box: torch.Tensor, size: int, margin: float = REGION_MARGIN) -> torch.Tensor:
    """(N, 4) union boxes → (N, 1, size, size) {0, 1}: the pixels stage 2 paints; the rest is background."""
    return (box_coverage(expand_box(box.float(), size, margin), size) > 0).float()


LAYOUT_MARGIN = 3 / 128  # the generated region around layout masks: this fraction of the image side


def layout_region(masks: torch.Tensor, margin: float = LAYOUT_MARGIN) -> torch.Tensor:
    """(N, 2, S, S) human/object layout masks → (N, 1, S, S) {0, 1}: their union grown by ``margin``.

    With masks, stage 2 paints only there; in HOI-World every pixel that the pair changes lies
    within 2 px of its masks at 128 px.
    """
    radius = max(1, round(margin * masks.shape[-1]))
    union = (masks.amax(1, keepdim=True) > 0).float()
    return F.max_pool2d(union, 2 * radius + 1, stride=1, padding=radius)
