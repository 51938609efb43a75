"""Turning samples into model tensors, shared by every training task and evaluator."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from choi.data.schema import Sample
from choi.vocabulary import OBJECT_CATEGORIES, label_index
from choi.world.objects import N_OBJECT_IDENTITIES, look_id


def image_tensor(images: Sequence[np.ndarray] | np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 → (N, 3, H, W) float in [0, 1]."""
    arr = np.ascontiguousarray(np.stack(list(images)) if not isinstance(images, np.ndarray) else images)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)


def mask_tensor(human: Sequence[np.ndarray], obj: Sequence[np.ndarray]) -> torch.Tensor:
    """Human and object masks → (N, 2, H, W) float {0, 1}; channel 0 human, 1 object."""
    arr = np.stack([np.stack([h, o]) for h, o in zip(human, obj, strict=True)]).astype(np.float32)
    return torch.from_numpy(arr)


def collate(samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
    """The standard batch: target, masks, references, boxes, labels, identity ids (objects also by
    look, :func:`object_look_key`) and object categories."""
    return {
        "image": image_tensor([s.image for s in samples]),
        "masks": mask_tensor([s.human_mask for s in samples], [s.object_mask for s in samples]),
        "human_ref": image_tensor([s.human_ref for s in samples]),
        "object_ref": image_tensor([s.object_ref for s in samples]),
        "ref_masks": mask_tensor([s.human_ref_mask for s in samples], [s.object_ref_mask for s in samples]),
        "union_box": torch.tensor([s.union_box for s in samples], dtype=torch.float32),
        "label": torch.tensor([label_index(s.interaction) for s in samples], dtype=torch.long),
        "human_id": torch.tensor([s.human_id for s in samples], dtype=torch.long),
        "object_id": torch.tensor([s.object_id for s in samples], dtype=torch.long),
        "object_look": torch.tensor(
            [object_look_key(s.object_category, s.object_id) for s in samples], dtype=torch.long
        ),
        "object_category": torch.tensor([_category_index(s.object_category) for s in samples], dtype=torch.long),
    }


def object_key(category: str, object_id: int) -> int:
    """One integer per object identity: ids are numbered per category, so "ball 5" and "cup 5"
    are different objects."""
    return _category_index(category) * 1_000_000 + int(object_id)


def object_look_key(category: str, object_id: int) -> int:
    """:func:`object_key` of the first HOI-World identity that looks exactly like this one
    (:func:`choi.world.objects.look_id`): the key identity retrieval scores and trains with, since
    no picture can tell apart two objects that differ only in what is never drawn. Objects from
    elsewhere (real data) keep their own key.
    """
    if category in OBJECT_CATEGORIES and 0 <= int(object_id) < N_OBJECT_IDENTITIES[category]:
        return object_key(category, look_id(category, int(object_id)))
    return object_key(category, object_id)


def _category_index(category: str) -> int:
    """Index in :data:`OBJECT_CATEGORIES`; -1 for a category HOI-World does not draw (real data)."""
    return OBJECT_CATEGORIES.index(category) if category in OBJECT_CATEGORIES else -1
