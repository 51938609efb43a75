"""Every metric against small cases computed by hand (or by a maintained reference implementation)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from choi.evaluation import metrics as M
from choi.vocabulary import CLASSES

# --- interaction ------------------------------------------------------------------------------


def test_accuracy_percent():
    assert M.accuracy(np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])) == pytest.approx(75.0)


@pytest.mark.parametrize(
    "pred, true",
    [
        (np.array([0, 1]), np.array([0, 1, 2])),  # length mismatch
        (np.array([], dtype=int), np.array([], dtype=int)),  # empty
        (np.array([0.0, 1.0]), np.array([0, 1])),  # float labels
        (np.array([[0, 1]]), np.array([[0, 1]])),  # 2-D
    ],
)
def test_accuracy_rejects_bad_input(pred, true):
    with pytest.raises(ValueError):
        M.accuracy(pred, true)


def test_per_class_accuracy_only_present_classes():
    acc = M.per_class_accuracy(np.array([0, 1, 2, 2, 0]), np.array([0, 1, 1, 2, 2]), ["a", "b", "c", "d"])
    assert acc == {"a": pytest.approx(100.0), "b": pytest.approx(50.0), "c": pytest.approx(50.0)}
    with pytest.raises(ValueError):
        M.per_class_accuracy(np.array([0]), np.array([0, 1]), ["a", "b"])


def test_average_precision_known_ranking():
    # Ranked: pos, neg, pos, neg, pos -> precisions at the positives 1/1, 2/3, 3/5.
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    pos = np.array([True, False, True, False, True])
    assert M.average_precision(scores, pos) == pytest.approx(100 * (1 + 2 / 3 + 3 / 5) / 3)
    assert M.average_precision(scores, np.ones(5, bool)) == pytest.approx(100.0)


def test_average_precision_ties_form_one_threshold():
    # Two tied scores, one positive and one negative: one threshold with precision 1/2, whatever
    # order a sort leaves them in.
    assert M.average_precision(np.array([0.5, 0.5]), np.array([True, False])) == pytest.approx(50.0)
    assert M.average_precision(np.array([0.5, 0.5]), np.array([False, True])) == pytest.approx(50.0)


def test_average_precision_matches_torchmetrics():
    from torchmetrics.functional.classification import binary_average_precision

    rng = np.random.default_rng(0)
    scores = rng.random(40).round(1)  # rounding plants ties
    pos = rng.random(40) < 0.4
    ref = binary_average_precision(torch.from_numpy(scores), torch.from_numpy(pos.astype(np.int64)))
    assert M.average_precision(scores, pos) == pytest.approx(100 * float(ref), abs=1e-4)  # torchmetrics returns float32


def test_average_precision_rejects_no_positive_and_non_bool():
    with pytest.raises(ValueError, match="without positives"):
        M.average_precision(np.array([0.1, 0.2]), np.array([False, False]))
    with pytest.raises(ValueError, match="bool"):
        M.average_precision(np.array([0.1, 0.2]), np.array([0, 1]))


def test_mean_average_precision_split_with_one_rare_class():
    # 3 classes, class 2 rare, class 3 never occurs (skipped).
    scores = np.array(
        [
            [0.9, 0.1, 0.0, 0.0],  # true 0
            [0.8, 0.2, 0.0, 0.0],  # true 1
            [0.1, 0.7, 0.3, 0.0],  # true 1
            [0.2, 0.1, 0.6, 0.0],  # true 2
            [0.3, 0.0, 0.9, 0.0],  # true 0
        ]
    )
    labels = np.array([0, 1, 1, 2, 0])
    rare = np.array([False, False, True, False])
    # class 0: ranked scores .9(p) .8(n) .3(p) .2(n) .1(n) -> (1 + 2/3) / 2
    # class 1: .7(p) .2(p) .1(n) .1(n) 0(n) -> 1
    # class 2: .9(n) .6(p) ... -> 1/2
    ap0, ap1, ap2 = (1 + 2 / 3) / 2, 1.0, 0.5
    out = M.mean_average_precision(scores, labels, rare)
    assert out["full"] == pytest.approx(100 * (ap0 + ap1 + ap2) / 3)
    assert out["rare"] == pytest.approx(100 * ap2)
    assert out["non_rare"] == pytest.approx(100 * (ap0 + ap1) / 2)
    assert (out["n_classes"], out["n_rare"], out["n_non_rare"], out["n_skipped"]) == (3, 1, 2, 1)


def test_mean_average_precision_no_rare_class_present_is_nan():
    scores = np.eye(2)
    out = M.mean_average_precision(scores, np.array([0, 1]), np.array([False, False]))
    assert out["full"] == pytest.approx(100.0)
    assert math.isnan(out["rare"])


def test_mean_average_precision_accepts_vocabulary_rare_flags():
    rare = np.array([c.rare for c in CLASSES])
    labels = np.arange(len(CLASSES))
    out = M.mean_average_precision(np.eye(len(CLASSES)), labels, rare)
    assert out["full"] == out["rare"] == out["non_rare"] == pytest.approx(100.0)
    assert out["n_rare"] == int(rare.sum())


@pytest.mark.parametrize(
    "scores, labels, rare",
    [
        (np.zeros((3, 2)), np.array([0, 1]), np.array([False, False])),  # rows mismatch
        (np.zeros((2, 2)), np.array([0, 2]), np.array([False, False])),  # label out of range
        (np.zeros((2, 2)), np.array([0, 1]), np.array([0, 1])),  # rare mask not bool
        (np.zeros((2, 2)), np.array([0, 1]), np.array([False])),  # rare mask wrong length
        (np.array([[np.nan, 0], [0, 0]]), np.array([0, 1]), np.array([False, False])),  # NaN
        (np.zeros(2), np.array([0, 1]), np.array([False, False])),  # 1-D scores
    ],
)
def test_mean_average_precision_rejects_bad_input(scores, labels, rare):
    with pytest.raises(ValueError):
        M.mean_average_precision(scores, labels, rare)


# --- identity ---------------------------------------------------------------------------------


def test_cosine_similarity_known_values():
    a = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    b = np.array([[3.0, 0.0], [0.0, 1.0], [-1.0, -1.0], [1.0, 1.0]])
    np.testing.assert_allclose(M.cosine_similarity(a, b), [100.0, 0.0, -100.0, 100 / math.sqrt(2)])


def test_cosine_similarity_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        M.cosine_similarity(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="all-zero"):
        M.cosine_similarity(np.zeros((1, 3)), np.ones((1, 3)))
    with pytest.raises(ValueError):
        M.cosine_similarity(np.ones((0, 3)), np.ones((0, 3)))


def test_pair_similarity_is_mean():
    np.testing.assert_allclose(M.pair_similarity(np.array([80.0, 10.0]), np.array([60.0, -10.0])), [70.0, 0.0])
    with pytest.raises(ValueError):
        M.pair_similarity(np.array([1.0]), np.array([1.0, 2.0]))


def test_retrieval_top1_with_planted_mismatch():
    gallery = np.eye(3)  # ids 10, 11, 12 along the axes
    gallery_ids = np.array([10, 11, 12])
    query = np.array([[0.9, 0.1, 0.0], [0.1, 0.9, 0.0], [0.0, 0.2, 0.8], [0.9, 0.0, 0.1]])
    query_ids = np.array([10, 11, 12, 12])  # the last query lies nearest id 10: a miss
    assert M.retrieval_top1(query, query_ids, gallery, gallery_ids) == pytest.approx(75.0)


def test_retrieval_top1_uses_cosine_not_distance():
    gallery = np.array([[10.0, 0.0], [0.7, 0.7]])  # a long vector must not win by magnitude
    assert M.retrieval_top1(np.array([[0.5, 0.6]]), np.array([1]), gallery, np.array([0, 1])) == 100.0


def test_retrieval_top1_rejects_bad_input():
    with pytest.raises(ValueError, match="dim"):
        M.retrieval_top1(np.ones((1, 2)), np.array([0]), np.ones((1, 3)), np.array([0]))
    with pytest.raises(ValueError, match="one id per row"):
        M.retrieval_top1(np.ones((2, 2)), np.array([0]), np.ones((1, 2)), np.array([0]))


# --- quality ----------------------------------------------------------------------------------


def test_fid_kid_identical_sets_and_shift():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(60, 4))
    same = M.fid_kid(real, real, kid_subsets=5)
    assert same["fid"] == pytest.approx(0.0, abs=1e-6)
    assert (same["n_real"], same["n_fake"]) == (60, 60)

    # FID of Gaussians with equal covariance is the squared mean shift: here ~ 4 * 2^2 = 16.
    shifted = M.fid_kid(real, real + 2.0, kid_subsets=5)
    assert shifted["fid"] == pytest.approx(16.0, rel=1e-6)

    independent = M.fid_kid(real, rng.normal(size=(60, 4)), kid_subsets=20, kid_subset_size=30)
    assert shifted["kid_mean"] > 10 * abs(independent["kid_mean"])
    assert shifted["kid_mean"] > 0 and independent["kid_std"] >= 0


def test_fid_matches_scipy_frechet_distance():
    from scipy import linalg

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(40, 3)), rng.normal(size=(50, 3)) * 1.5 + 0.3
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert M.fid_kid(a, b, kid_subsets=2)["fid"] == pytest.approx(ref, rel=1e-8)


def test_kid_is_seeded_and_leaves_global_rng_alone():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(30, 3)), rng.normal(size=(30, 3)) + 0.5
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = M.fid_kid(a, b, kid_subset_size=10, kid_subsets=5, seed=7)
    assert torch.rand(1) == expected_next
    assert M.fid_kid(a, b, kid_subset_size=10, kid_subsets=5, seed=7) == first
    assert M.fid_kid(a, b, kid_subset_size=10, kid_subsets=5, seed=8)["kid_mean"] != first["kid_mean"]


def test_fid_kid_rejects_bad_input():
    with pytest.raises(ValueError, match="dims"):
        M.fid_kid(np.ones((5, 2)), np.ones((5, 3)))
    with pytest.raises(ValueError, match="N >= 2"):
        M.fid_kid(np.ones((1, 2)), np.ones((5, 2)))
    with pytest.raises(ValueError, match="kid_subset_size"):
        M.fid_kid(np.random.rand(5, 2), np.random.rand(5, 2), kid_subset_size=6)


# --- controls ---------------------------------------------------------------------------------


def test_box_iou_known_boxes():
    assert M.box_iou((0, 0, 0.5, 0.5), (0, 0, 0.5, 0.5)) == pytest.approx(100.0)
    assert M.box_iou((0, 0, 0.5, 0.5), (0.25, 0.25, 0.75, 0.75)) == pytest.approx(100 / 7)  # 1/16 / 7/16
    assert M.box_iou((0, 0, 0.2, 0.2), (0.5, 0.5, 1, 1)) == 0.0
    assert M.box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0  # empty generation scores no adherence


def test_box_iou_batched_and_broadcast():
    a = np.array([[0, 0, 0.5, 0.5], [0, 0, 1, 1]])
    np.testing.assert_allclose(M.box_iou(a, a), [100.0, 100.0])
    np.testing.assert_allclose(M.box_iou(a, (0, 0, 0.5, 0.5)), [100.0, 25.0])


@pytest.mark.parametrize(
    "box",
    [(0, 0, 1.5, 1), (0.5, 0, 0.2, 1), (0, 0, 1), (0, 0, float("nan"), 1)],
)
def test_box_iou_rejects_bad_boxes(box):
    with pytest.raises(ValueError):
        M.box_iou(box, (0, 0, 1, 1))


def test_box_iou_rejects_unpairable_batches():
    with pytest.raises(ValueError, match="paired"):
        M.box_iou(np.zeros((2, 4)), np.zeros((3, 4)))


def test_union_box_from_masks():
    human = np.zeros((10, 20), bool)
    obj = np.zeros((10, 20), bool)
    human[2:5, 4:8] = True
    obj[6:9, 10:12] = True
    assert M.union_box_from_masks(human, obj) == pytest.approx((4 / 20, 2 / 10, 12 / 20, 9 / 10))
    assert M.union_box_from_masks(human) == pytest.approx((4 / 20, 2 / 10, 8 / 20, 5 / 10))
    assert M.union_box_from_masks(np.zeros((4, 4), bool)) == (0.0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="shape"):
        M.union_box_from_masks(human, np.zeros((5, 5), bool))
    with pytest.raises(ValueError, match="bool"):
        M.union_box_from_masks(human.astype(np.uint8))


def test_box_to_pixels_rounds_outwards():
    assert M.box_to_pixels((0.25, 0.5, 0.75, 1.0), 4, 8) == (2, 2, 6, 4)
    assert M.box_to_pixels((0.3, 0.3, 0.31, 0.31), 10, 10) == (3, 3, 4, 4)  # 0.3*10 = 3.0000000000000004


def test_background_preservation_ignores_changes_inside_box():
    rng = np.random.default_rng(0)
    bg = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    gen = bg.copy()
    gen[2:6, 2:6] = 255 - gen[2:6, 2:6]  # the method painted inside the box
    out = M.background_preservation(gen, bg, (0.25, 0.25, 0.75, 0.75))
    assert out == {"psnr": float("inf"), "mae": 0.0, "mse": 0.0}


def test_background_preservation_known_error_outside_box():
    bg = np.full((4, 4, 3), 100, np.uint8)
    gen = bg.copy()
    gen[0, 0] = 110  # one outside pixel off by 10 in 3 channels; 12 outside pixels in all
    out = M.background_preservation(gen, bg, (0.5, 0.5, 1.0, 1.0))
    mse = 3 * 10**2 / (12 * 3)
    assert out["mae"] == pytest.approx(3 * 10 / (12 * 3))
    assert out["mse"] == pytest.approx(mse)
    assert out["psnr"] == pytest.approx(10 * math.log10(255**2 / mse))


def test_background_preservation_matches_skimage_psnr():
    from skimage.metrics import peak_signal_noise_ratio

    rng = np.random.default_rng(3)
    bg = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    gen = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    out = M.background_preservation(gen, bg, (0.5, 0.0, 1.0, 1.0))
    ref = peak_signal_noise_ratio(bg[:, :3], gen[:, :3], data_range=255)
    assert out["psnr"] == pytest.approx(ref)


def test_background_preservation_rejects_bad_input():
    img = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="whole image"):
        M.background_preservation(img, img, (0, 0, 1, 1))
    with pytest.raises(ValueError, match="differ in size"):
        M.background_preservation(img, np.zeros((4, 5, 3), np.uint8), (0, 0, 0.5, 0.5))
    with pytest.raises(ValueError, match="uint8"):
        M.background_preservation(img.astype(np.float32), img, (0, 0, 0.5, 0.5))
