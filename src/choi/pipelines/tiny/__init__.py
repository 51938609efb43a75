"""choi-tiny: the embedded default family, trained on HOI-World, shipped in the package."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from choi.models.text_encoder import TextEncoder
from choi.pipelines.tiny.mask import MaskPipeline
from choi.pipelines.tiny.render import ImageRenderer
from choi.pipelines.tiny.runner import shipped_weights
from choi.pipelines.tiny.stages import TinyImageStage, TinyMaskStage, TinyOptions

FAMILY = "choi-tiny"
__all__ = ["FAMILY", "TinyOptions", "load", "shipped_weights"]


def load(folder: Path, index: dict[str, Any], model_id: str, torch_dtype: torch.dtype = torch.float32):
    """``folder``'s stage components (``mask/`` and ``image/``, or as ``index["components"]`` names them)."""
    components = index.get("components", {})
    text_encoder = TextEncoder()
    masks = MaskPipeline.from_pretrained(
        folder / components.get("mask", "mask"), torch_dtype, text_encoder=text_encoder
    )
    renderer = ImageRenderer.from_pretrained(folder / components.get("image", "image"), torch_dtype, text_encoder)
    masks.model_id, renderer.model_id = f"{model_id}/mask", f"{model_id}/image"
    return TinyMaskStage(masks), TinyImageStage(renderer), TinyOptions
