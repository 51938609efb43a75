"""Condition encoders shared by both stages: reference crops, box maps and role-tagged tokens.

Example:
    >>> crops = fit_to_box(ref_rgb, ref_mask, 64)  # each reference cropped to its subject, squared
    >>> cover = box_coverage(torch.tensor([[0.2, 0.3, 0.8, 0.9]]), 32)  # (1, 1, 32, 32)
"""

from __future__ import annotations

import math

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


def _resample(images: torch.Tensor, theta: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear ``grid_sample`` of (M, C, H, W) on an affine output→input map into ``size`` (S or (h, w));
    zero outside the image."""
    h, w = (size, size) if isinstance(size, int) else size
    grid = F.affine_grid(theta, [images.shape[0], 1, h, w], align_corners=False)
    # Average-pool first so that a large subject is not aliased away by point sampling.
    factor = max(1, int(min(images.shape[-2:]) // (2 * min(h, w))))
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


def turns_and_mirrors(turns: int) -> torch.Tensor:
    """(2·turns, 2, 2) linear maps: rotations by multiples of 360°/``turns``, then the same mirrored
    left-right; the identity first."""
    angle = torch.arange(turns, dtype=torch.float32) * (2 * math.pi / turns)
    c, s = angle.cos(), angle.sin()
    rot = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # (T, 2, 2)
    return torch.cat([rot, rot @ torch.tensor([[-1.0, 0.0], [0.0, 1.0]])])


def _box_maps(
    masks: torch.Tensor, t0: torch.Tensor, t1: torch.Tensor, size: tuple[int, int], linear: torch.Tensor
) -> torch.Tensor:
    """Affine output→input maps (M, K, 2, 3) for ``affine_grid``: each silhouette turned by each of the
    ``linear`` maps (K, 2, 2) about its centroid, then its box stretched onto its target box, whose
    (x, y) pixel edges ``t0``, ``t1`` (M, 2) lie in an image of ``size`` (h, w)."""
    _, _, h, w = masks.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, device=masks.device) + 0.5, torch.arange(w, device=masks.device) + 0.5, indexing="ij"
    )
    pts = torch.stack([xs.flatten(), ys.flatten()], -1)  # (P, 2) pixel centres
    on = masks.flatten(1) > 0.5  # (M, P)
    on = torch.where(on.any(-1, keepdim=True), on, True)  # an empty silhouette stands for the whole image
    centre = (on.float() @ pts) / on.sum(-1, keepdim=True).clamp_min(1)  # (M, 2)
    linear = linear.to(masks.device)
    turned = torch.einsum("kij,mpj->mkpi", linear, pts[None] - centre[:, None])  # (M, K, P, 2)
    inside = on[:, None, :, None]
    lo = torch.where(inside, turned, torch.inf).amin(2) - 0.5  # (M, K, 2) box edges of the turned silhouette
    hi = torch.where(inside, turned, -torch.inf).amax(2) + 0.5
    t0, t1 = t0[:, None], t1[:, None]  # (M, 1, 2)
    scale = (hi - lo) / (t1 - t0)  # turned-reference pixels per target pixel
    # target pixel edge u → turned point lo + (u - t0)·scale → reference point L⁻¹(·) + centre;
    # affine_grid speaks [-1, 1] on both sides: u = (u' + 1)·(S_w, S_h)/2 and p' = 2p/(W, H) - 1.
    inv = linear.transpose(-1, -2)[None]  # rotations and mirrors: the inverse is the transpose
    to_unit = torch.tensor([2 / w, 2 / h], device=masks.device)
    half = torch.tensor([size[1] / 2, size[0] / 2], device=masks.device)  # (x, y) of the output
    a = to_unit[None, None, :, None] * inv * (scale * half)[..., None, :]  # (M, K, 2, 2)
    offset = (inv @ (scale * half + lo - t0 * scale)[..., None])[..., 0] + centre[:, None]
    return torch.cat([a, (to_unit * offset - 1)[..., None]], -1)


def _fit_maps(masks: torch.Tensor, targets: torch.Tensor, turns: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The output→input map (M, 2, 3) that stretches each silhouette's box onto its target's box, after
    the turn that fits best (see :func:`warp_into_masks`), and whether both masks are non-empty (M,)."""
    m, _, h, w = masks.shape
    size = tuple(targets.shape[-2:])
    _, _, _, _, r_empty = mask_bounds(masks)
    tx0, ty0, tx1, ty1, t_empty = mask_bounds(targets)
    linear = turns_and_mirrors(turns) if turns > 0 else torch.eye(2)[None]
    t0, t1 = torch.stack([tx0, ty0], -1), torch.stack([tx1, ty1], -1)
    theta = _box_maps(masks.float(), t0, t1, size, linear)  # (M, K, 2, 3)
    if turns > 0:
        k = theta.shape[1]
        sil = masks.float()[:, None].expand(m, k, 1, h, w).flatten(0, 1)
        warped = _resample(sil, theta.flatten(0, 1), size).view(m, k, *size)
        target = targets.float()[:, :1]
        iou = torch.minimum(warped, target).sum((-2, -1)) / torch.maximum(warped, target).sum((-2, -1)).clamp_min(1e-6)
        iou[:, 1:] -= 0.02  # a turn must earn its place
        theta = theta[torch.arange(m), iou.argmax(1)]
    else:
        theta = theta[:, 0]
    return theta, ~(r_empty | t_empty)


def warp_into_masks(images: torch.Tensor, masks: torch.Tensor, targets: torch.Tensor, turns: int = 0) -> torch.Tensor:
    """Stretch each subject's box onto its target mask's box, kept only inside the target mask.

    A coarse, pose-blind first guess of what the target looks like (the reference's colours where
    the layout puts the subject), which stage 2 then corrects. images (M, 3, H, W) in [0, 1],
    masks (M, 1, H, W) their silhouettes, targets (M, 1, S, S) layout masks → (M, 4, S, S): the
    subject's colours premultiplied by its warped silhouette, then that silhouette (its coverage).
    An empty mask or target gives zeros.

    With ``turns`` > 0 the subject is first turned by the multiple of 360°/``turns``, mirrored or
    not, whose stretched silhouette best overlaps the target (IoU; the plain stretch wins unless
    another beats it by 0.02): a reference drawn tilted or facing the other way then lands the
    right way round (an object's reference in HOI-World is both).
    """
    theta, valid = _fit_maps(masks, targets, turns)
    layers = _resample(torch.cat([images.float() * masks.float(), masks.float()], 1), theta, tuple(targets.shape[-2:]))
    return layers * targets.float() * valid.float()[:, None, None, None]


def snap_silhouettes(
    masks: torch.Tensor, targets: torch.Tensor, turns: int, size: tuple[int, int] | None = None
) -> torch.Tensor:
    """Each silhouette turned and stretched onto its target's box as :func:`warp_into_masks` does, but
    not cut to the target: the subject's own clean outline where a rough target mask puts it.

    masks (M, 1, H, W) silhouettes, targets (M, 1, h, w) rough masks → (M, 1, *size) bool, ``size``
    defaulting to (h, w): the fit is searched at the targets' size and drawn at any size of the same
    shape. An empty mask or target gives an empty result.
    """
    theta, valid = _fit_maps(masks, targets, turns)
    warped = _resample(masks.float(), theta, size or tuple(targets.shape[-2:])) > 0.5
    return warped & valid[:, None, None, None]


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


# Stage 1's zoom draws a window around the box at full resolution; see docs/experiments.md#zoom.
ZOOM_MARGIN = 0.2  # of the box's longer side, each way: the middle of MaskTrainConfig.zoom_margins
MIN_ZOOM_WINDOW = 0.25  # of the frame's side: a tiny box still gets some context


def zoom_window(box: torch.Tensor, margin: float | torch.Tensor = ZOOM_MARGIN) -> torch.Tensor:
    """(N, 4) normalised boxes → (N, 4) the square window (in normalised coordinates, so of the frame's
    aspect) centred on each box, its longer side grown by ``margin`` each way, at least
    :data:`MIN_ZOOM_WINDOW`, shifted to lie inside the frame."""
    x0, y0, x1, y1 = box.float().unbind(-1)
    side = (torch.maximum(x1 - x0, y1 - y0) * (1 + 2 * torch.as_tensor(margin))).clamp(MIN_ZOOM_WINDOW, 1)
    left = ((x0 + x1 - side) / 2).clamp(min=0).minimum(1 - side)
    top = ((y0 + y1 - side) / 2).clamp(min=0).minimum(1 - side)
    return torch.stack([left, top, left + side, top + side], -1)


def box_in_window(box: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """(N, 4) normalised boxes → the same boxes in the coordinates of (N, 4) windows, clipped to them."""
    origin = window[:, :2].repeat(1, 2)
    extent = (window[:, 2:] - window[:, :2]).repeat(1, 2)
    return ((box - origin) / extent).clamp(0, 1)


def crop_windows(images: torch.Tensor, window: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) images cut to (N, 4) normalised windows, each resampled to (N, C, size, size).

    The full frame (0, 0, 1, 1) at half the resolution is the exact 2×2 area average.
    """
    theta = torch.zeros(images.shape[0], 2, 3, device=images.device)
    theta[:, 0, 0], theta[:, 0, 2] = window[:, 2] - window[:, 0], window[:, 0] + window[:, 2] - 1
    theta[:, 1, 1], theta[:, 1, 2] = window[:, 3] - window[:, 1], window[:, 1] + window[:, 3] - 1
    return _resample(images, theta, size)


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
    """(N, 2, S, S) human/object layout masks → (N, 1, S, S) {0, 1}: their union grown by ``margin``
    (a fraction of the side, at least a pixel when positive).

    With masks, stage 2 paints only there; in HOI-World every pixel that the pair changes lies
    within 2 px of its masks at 128 px.
    """
    union = (masks.amax(1, keepdim=True) > 0).float()
    if margin <= 0:
        return union
    radius = max(1, round(margin * masks.shape[-1]))  # at least a pixel
    return F.max_pool2d(union, 2 * radius + 1, stride=1, padding=radius)
