"""Pure evaluation metrics: numpy arrays in, floats / dicts / arrays out. No models, no I/O.

Units, the same for every function here:
- scores bounded by 1 by nature (accuracy, average precision, cosine similarity, retrieval top-1,
  box IoU) are returned **in percent**, i.e. multiplied by 100, because that is how the paper and
  choi's report print them; a cosine similarity therefore lies in [-100, 100], the others in [0, 100];
- distances keep their natural units: FID and KID in feature units, background MAE in uint8
  intensity levels (0–255), PSNR in dB with a peak of 255;
- a mean over an empty set (e.g. the rare-class mAP when no rare class occurs) is ``nan``.

Bad input (wrong shape or dtype, empty arrays, boxes outside [0, 1]) raises :class:`ValueError`
saying what was received and what is allowed; nothing is silently clipped or reshaped.

Boxes follow :mod:`choi.data.schema`: normalised ``(x1, y1, x2, y2)`` in [0, 1].
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from choi.data.schema import Box, mask_box

PERCENT = 100.0
_BOX_TOL = 1e-6  # float noise allowed outside [0, 1] (e.g. 0.30000000000000004)


# --- input checks -----------------------------------------------------------------------------


def _labels(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of class ids, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class ids, got dtype {x.dtype}")
    return x


def _features(x: np.ndarray, name: str, min_rows: int = 1) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] < min_rows or x.shape[1] == 0:
        raise ValueError(f"{name} must be a 2-D (N, D) array with N >= {min_rows} and D >= 1, got {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError(f"{name} must be real-valued, got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf")
    return x.astype(np.float64)


def _image(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[2] != 3 or x.shape[0] == 0 or x.shape[1] == 0 or x.dtype != np.uint8:
        raise ValueError(f"{name} must be an (H, W, 3) uint8 image, got shape {x.shape} dtype {x.dtype}")
    return x


def _boxes(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim not in (1, 2) or x.shape[-1] != 4 or x.size == 0:
        raise ValueError(f"{name} must be a box (4,) or boxes (N, 4) as (x1, y1, x2, y2), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf")
    if np.any(x < -_BOX_TOL) or np.any(x > 1 + _BOX_TOL):
        raise ValueError(f"{name} must be normalised to [0, 1], got values in [{x.min()}, {x.max()}]")
    if np.any(x[..., 2] < x[..., 0]) or np.any(x[..., 3] < x[..., 1]):
        raise ValueError(f"{name} must satisfy x1 <= x2 and y1 <= y2")
    return x


# --- interaction ------------------------------------------------------------------------------


def _label_pair(pred_labels: np.ndarray, true_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true labels, each checked by :func:`_labels`, of one length."""
    pred, true = _labels(pred_labels, "pred_labels"), _labels(true_labels, "true_labels")
    if pred.shape != true.shape:
        raise ValueError(f"pred_labels {pred.shape} and true_labels {true.shape} differ in length")
    return pred, true


def accuracy(pred_labels: np.ndarray, true_labels: np.ndarray) -> float:
    """Top-1 accuracy in percent: ``100 * mean(pred == true)``."""
    pred, true = _label_pair(pred_labels, true_labels)
    return float(np.mean(pred == true) * PERCENT)


def per_class_accuracy(pred_labels: np.ndarray, true_labels: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """Top-1 accuracy in percent of each class present in ``true_labels``, keyed by ``names[label]``."""
    pred, true = _label_pair(pred_labels, true_labels)
    return {names[c]: accuracy(pred[true == c], true[true == c]) for c in np.unique(true)}


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """Non-interpolated average precision of one class, in percent.

    ``AP = sum_n (R_n - R_{n-1}) * P_n`` over the distinct score thresholds in decreasing order,
    the convention of scikit-learn's and torchmetrics' ``average_precision``. Without tied scores it
    equals the mean of the precision at the rank of each positive. Tied scores form one threshold,
    so the result does not depend on how a sort happens to order ties.

    Example: scores ranked [pos, neg, pos] give (1/1 + 2/3) / 2 = 83.33.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(positives)
    if s.ndim != 1 or s.size == 0 or y.shape != s.shape:
        raise ValueError(f"scores {s.shape} and positives {y.shape} must be non-empty 1-D arrays of one length")
    if y.dtype != bool:
        raise ValueError(f"positives must be a bool array, got dtype {y.dtype}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or inf")
    if not y.any():
        raise ValueError("average precision is undefined for a class without positives")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    tp = np.cumsum(y)
    fp = np.cumsum(~y)
    last_of_tie = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]  # one point per distinct threshold
    tp, fp = tp[last_of_tie], fp[last_of_tie]
    precision = tp / (tp + fp)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision) * PERCENT)


def mean_average_precision(
    scores: np.ndarray, true_labels: np.ndarray, rare_mask: np.ndarray
) -> dict[str, float | int]:
    """Mean of per-class :func:`average_precision` (one-vs-rest), in percent, split like HICO-DET.

    Args:
        scores: ``(N, C)`` class scores (logits or probabilities; only their order matters).
        true_labels: ``(N,)`` true class ids in ``[0, C)``.
        rare_mask: ``(C,)`` bool, True for rare classes (``choi.vocabulary`` ``rare`` flags).

    Returns:
        ``full`` / ``rare`` / ``non_rare``: mean AP over the classes with at least one positive
        sample (all, rare only, non-rare only); ``nan`` where that set is empty. ``n_classes``,
        ``n_rare``, ``n_non_rare``: how many classes each mean covers; ``n_skipped``: classes
        left out because no sample has them (their AP is undefined, not zero).
    """
    s = _features(scores, "scores")
    y = _labels(true_labels, "true_labels")
    rare = np.asarray(rare_mask)
    n, c = s.shape
    if y.shape[0] != n:
        raise ValueError(f"scores has {n} rows but true_labels has {y.shape[0]}")
    if rare.shape != (c,) or rare.dtype != bool:
        raise ValueError(f"rare_mask must be a ({c},) bool array, got shape {rare.shape} dtype {rare.dtype}")
    if y.min() < 0 or y.max() >= c:
        raise ValueError(f"true_labels must lie in [0, {c}), got [{y.min()}, {y.max()}]")

    present = np.bincount(y, minlength=c) > 0
    ap = np.full(c, np.nan)
    for k in np.nonzero(present)[0]:
        ap[k] = average_precision(s[:, k], y == k)

    def _mean(selected: np.ndarray) -> float:
        return float(ap[selected].mean()) if selected.any() else float("nan")

    return {
        "full": _mean(present),
        "rare": _mean(present & rare),
        "non_rare": _mean(present & ~rare),
        "n_classes": int(present.sum()),
        "n_rare": int((present & rare).sum()),
        "n_non_rare": int((present & ~rare).sum()),
        "n_skipped": int((~present).sum()),
    }


# --- identity ---------------------------------------------------------------------------------


def _unit(x: np.ndarray, name: str) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(norm == 0):
        raise ValueError(f"{name} contains an all-zero embedding; its direction (and cosine) is undefined")
    return x / norm


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity in percent: ``100 * <a_i, b_i> / (|a_i| |b_i|)``, shape ``(N,)``."""
    a, b = _features(a, "a"), _features(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a {a.shape} and b {b.shape} must have the same shape")
    return np.sum(_unit(a, "a") * _unit(b, "b"), axis=1) * PERCENT


def pair_similarity(human_similarity: np.ndarray, object_similarity: np.ndarray) -> np.ndarray:
    """Pair similarity: the mean of the human and object similarities, per sample, shape ``(N,)``.

    A plain mean so that neither entity dominates the pair score: a method that keeps the person
    but loses the object scores halfway, not near the top. Inputs are in percent (from
    :func:`cosine_similarity`), and so is the result.
    """
    h = np.asarray(human_similarity, dtype=np.float64)
    o = np.asarray(object_similarity, dtype=np.float64)
    if h.ndim != 1 or h.size == 0 or h.shape != o.shape:
        raise ValueError(f"human {h.shape} and object {o.shape} similarities must be non-empty 1-D, same length")
    return (h + o) / 2


def retrieval_top1(query: np.ndarray, query_ids: np.ndarray, gallery: np.ndarray, gallery_ids: np.ndarray) -> float:
    """Identity retrieval top-1 in percent.

    For each query embedding, the gallery embedding of highest cosine similarity is retrieved; the
    score is the percentage of queries whose retrieved id equals their own. Ties go to the first
    gallery row. A gallery may hold several embeddings per id.
    """
    nearest = nearest_ids(query, gallery, gallery_ids)
    qid = _labels(query_ids, "query_ids")
    if qid.shape[0] != nearest.shape[0]:
        raise ValueError("query_ids must have one id per row of query")
    return float(np.mean(nearest == qid) * PERCENT)


def nearest_ids(query: np.ndarray, gallery: np.ndarray, gallery_ids: np.ndarray) -> np.ndarray:
    """The id of each query's most cosine-similar gallery row, shape ``(N,)``; ties go to the first row."""
    q, g = _features(query, "query"), _features(gallery, "gallery")
    gid = _labels(gallery_ids, "gallery_ids")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query dim {q.shape[1]} and gallery dim {g.shape[1]} differ")
    if gid.shape[0] != g.shape[0]:
        raise ValueError("gallery_ids must have one id per row of gallery")
    return gid[np.argmax(_unit(q, "query") @ _unit(g, "gallery").T, axis=1)]


# --- quality ----------------------------------------------------------------------------------


class _Precomputed(nn.Module):
    """Identity "feature extractor", so torchmetrics' FID/KID can consume features we already have."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features  # read by torchmetrics instead of probing with a dummy image

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def fid_kid(
    real_features: np.ndarray,
    fake_features: np.ndarray,
    kid_subset_size: int | None = None,
    kid_subsets: int = 100,
    seed: int = 0,
) -> dict[str, float | int]:
    """FID and KID between two feature sets, with torchmetrics' implementations.

    ``FID = |mu_r - mu_f|^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2))`` over the Gaussian fits of the
    two sets. KID is the unbiased polynomial-kernel MMD² (degree 3, gamma 1/D, coef 1) averaged over
    ``kid_subsets`` random subsets of ``kid_subset_size`` rows of each set; ``kid_std`` is the
    standard deviation over subsets. Subsets are drawn from ``seed``, so results are reproducible,
    and the global torch RNG is left as it was. KID's estimator is unbiased, so it can be slightly
    negative for two samples of one distribution (and is negative for a set against itself).

    Args:
        real_features: ``(N, D)`` features of real images (N >= 2).
        fake_features: ``(M, D)`` features of generated images (M >= 2).
        kid_subset_size: rows per KID subset; default ``min(1000, N, M)`` (1000 is the usual value,
            smaller sets use all their rows). An explicit value above ``min(N, M)`` raises.
        kid_subsets: number of KID subsets.
        seed: seed of the KID subset draws.

    Returns:
        ``fid``, ``kid_mean``, ``kid_std``, ``n_real``, ``n_fake``.
    """
    # torchmetrics is imported here: its image module is slow to import and most callers of this
    # file never compute FID.
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    real = _features(real_features, "real_features", min_rows=2)
    fake = _features(fake_features, "fake_features", min_rows=2)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real ({real.shape[1]}) and fake ({fake.shape[1]}) feature dims differ")
    n_real, n_fake, dim = real.shape[0], fake.shape[0], real.shape[1]
    if kid_subset_size is None:
        kid_subset_size = min(1000, n_real, n_fake)
    if not 2 <= kid_subset_size <= min(n_real, n_fake):
        raise ValueError(f"kid_subset_size must be in [2, min(n_real, n_fake) = {min(n_real, n_fake)}]")
    if kid_subsets < 1:
        raise ValueError(f"kid_subsets must be >= 1, got {kid_subsets}")

    # float64 throughout: the matrix square root in FID loses digits in float32 (torchmetrics
    # recommends set_dtype(torch.float64)), and it returns in the dtype of the features.
    real_t, fake_t = torch.from_numpy(real), torch.from_numpy(fake)
    fid = FrechetInceptionDistance(feature=_Precomputed(dim)).set_dtype(torch.float64)
    fid.update(real_t, real=True)
    fid.update(fake_t, real=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        kid = KernelInceptionDistance(feature=_Precomputed(dim), subsets=kid_subsets, subset_size=kid_subset_size)
    kid.update(real_t, real=True)
    kid.update(fake_t, real=False)
    # torchmetrics draws KID subsets from the global RNG; fork it so the seed is ours and local.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    return {
        # The eigenvalue square root can leave a tiny negative (-1e-12) for identical sets.
        "fid": max(float(fid.compute()), 0.0),
        "kid_mean": float(kid_mean),
        "kid_std": float(kid_std),
        "n_real": n_real,
        "n_fake": n_fake,
    }


# --- controls ---------------------------------------------------------------------------------


def box_iou(a: np.ndarray | Box, b: np.ndarray | Box) -> float | np.ndarray:
    """Intersection over union of normalised boxes, in percent.

    ``a`` and ``b`` are single boxes ``(4,)`` or batches ``(N, 4)`` (broadcast against each other);
    a single pair gives a float, batches an ``(N,)`` array. Two boxes with no area (e.g. the
    ``(0, 0, 0, 0)`` box of an empty mask) have IoU 0, so an empty generation scores 0 adherence.
    """
    a_arr, b_arr = _boxes(a, "a"), _boxes(b, "b")
    try:
        a_arr, b_arr = np.broadcast_arrays(a_arr, b_arr)
    except ValueError:
        raise ValueError(f"boxes of shapes {a_arr.shape} and {b_arr.shape} cannot be paired") from None
    iw = np.clip(np.minimum(a_arr[..., 2], b_arr[..., 2]) - np.maximum(a_arr[..., 0], b_arr[..., 0]), 0, None)
    ih = np.clip(np.minimum(a_arr[..., 3], b_arr[..., 3]) - np.maximum(a_arr[..., 1], b_arr[..., 1]), 0, None)
    inter = iw * ih
    area_a = (a_arr[..., 2] - a_arr[..., 0]) * (a_arr[..., 3] - a_arr[..., 1])
    area_b = (b_arr[..., 2] - b_arr[..., 0]) * (b_arr[..., 3] - b_arr[..., 1])
    union = area_a + area_b - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0) * PERCENT
    return float(iou) if iou.ndim == 0 else iou


def union_box_from_masks(*masks: np.ndarray) -> Box:
    """Normalised tight box around the union of one or more ``(H, W)`` bool masks.

    Pass ``(human_mask, object_mask)`` or a single foreground mask. An empty union gives
    ``(0, 0, 0, 0)``, as :func:`choi.data.schema.mask_box` does.
    """
    if not masks:
        raise ValueError("union_box_from_masks needs at least one mask")
    arrays = [np.asarray(m) for m in masks]
    for i, m in enumerate(arrays):
        if m.ndim != 2 or m.size == 0 or m.dtype != bool:
            raise ValueError(f"mask {i} must be a non-empty (H, W) bool array, got shape {m.shape} dtype {m.dtype}")
        if m.shape != arrays[0].shape:
            raise ValueError(f"masks differ in shape: {arrays[0].shape} vs {m.shape}")
    return tuple(float(v) for v in mask_box(np.logical_or.reduce(arrays)))


def box_to_pixels(box: np.ndarray | Box, height: int, width: int) -> tuple[int, int, int, int]:
    """Pixel bounds ``(x1, y1, x2, y2)`` (end-exclusive) of a normalised box in an ``H x W`` image.

    Rounded outwards (floor the start, ceil the end): every pixel the box touches counts as inside.
    For background preservation this leaves out border pixels a method was allowed to change; for
    crops it keeps the whole requested region.
    """
    b = _boxes(box, "box")
    if b.ndim != 1:
        raise ValueError(f"box must be a single (4,) box, got shape {b.shape}")
    x1 = int(np.floor(b[0] * width + _BOX_TOL))
    y1 = int(np.floor(b[1] * height + _BOX_TOL))
    x2 = int(np.ceil(b[2] * width - _BOX_TOL))
    y2 = int(np.ceil(b[3] * height - _BOX_TOL))
    return max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)


def background_preservation(generated: np.ndarray, background: np.ndarray, box: np.ndarray | Box) -> dict[str, float]:
    """How unchanged the background is outside the request box.

    Only pixels outside ``box`` (see :func:`box_to_pixels` for the rounding) are compared, over all
    three channels: ``mae = mean |g - b|`` and ``mse = mean (g - b)²`` in intensity levels (0–255),
    ``psnr = 10 log10(255² / mse)`` in dB, ``inf`` when the background is untouched. Because of that
    ``inf``, average PSNR over images as ``10 log10(255² / mean(mse))`` rather than as a mean of PSNRs
    (an exact copy-paste would make the mean infinite).
    """
    gen, bg = _image(generated, "generated"), _image(background, "background")
    if gen.shape != bg.shape:
        raise ValueError(f"generated {gen.shape} and background {bg.shape} differ in size")
    h, w = gen.shape[:2]
    x1, y1, x2, y2 = box_to_pixels(box, h, w)
    outside = np.ones((h, w), dtype=bool)
    outside[y1:y2, x1:x2] = False
    if not outside.any():
        raise ValueError("the box covers the whole image: no background pixels are left to compare")
    diff = gen[outside].astype(np.float64) - bg[outside].astype(np.float64)
    mse = float(np.mean(diff**2))
    psnr = float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))
    return {"psnr": psnr, "mae": float(np.mean(np.abs(diff))), "mse": mse}
