"""The frozen reference-identity encoder of choi-sd's stage 1: a choi-sd folder's CLIP image encoder.

Each reference is cut out on white and cropped to its silhouette (the crop choi-sd's stage 2 feeds
the same encoder); a reference without a photo (or a dropped one) is the blank white crop. The
image embeddings (``CLIPVisionModelWithProjection``'s ``image_embeds``) become the mask model's
identity tokens (:class:`~choi.models.mask_generator.MaskGenerator`, ``image_dim`` > 0).

Example:
    >>> encoder = ReferenceEncoder("IP-Adapter/models/image_encoder")
    >>> encoder([(person_rgb, person_silhouette), (None, object_silhouette)]).shape  # (2, 1024)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from choi.errors import ChoiError


class ReferenceEncoder:
    """A frozen ``CLIPVisionModelWithProjection`` folder and its preprocessing at the encoder's own input size.

    ``model``: that encoder already loaded (choi-sd's stage 2 holds it): shared, not loaded twice.
    """

    def __init__(self, folder: str | Path, device: str | torch.device = "cpu", model: Any = None):
        from choi.pipelines.sd.loading import clip_processor, load_identity_encoder
        from choi.quiet import quiet_loading

        folder = Path(folder)
        if model is None:
            if not (folder / "config.json").is_file():
                raise ChoiError(f"no CLIP image encoder in {str(folder)[:200]}: expected a "
                                "CLIPVisionModelWithProjection folder")  # fmt: skip
            with quiet_loading():
                model = load_identity_encoder("clip", folder)[0].to(device)
        self.path, self.model = folder, model.eval().requires_grad_(False)
        self.dim = model.config.projection_dim
        self.processor = clip_processor(model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> ReferenceEncoder:
        self.model.to(device)
        return self

    def pixels(self, pairs: Sequence[tuple[np.ndarray | None, np.ndarray]]) -> torch.Tensor:
        return reference_pixels(self.processor, pairs)

    @torch.no_grad()
    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """(n, 3, S, S) encoder input → (n, E) image embeddings (fp32)."""
        return self.model(pixels.to(self.device, self.model.dtype)).image_embeds.float()

    def __call__(self, pairs: Sequence[tuple[np.ndarray | None, np.ndarray]]) -> torch.Tensor:
        return self.embed(self.pixels(pairs))


def reference_pixels(processor: Any, pairs: Sequence[tuple[np.ndarray | None, np.ndarray]]) -> torch.Tensor:
    """(rgb or None, silhouette) pairs → (n, 3, S, S) encoder input through a CLIP ``processor``: each
    reference cut out on white; without a photo, or with an empty silhouette, the blank crop."""
    from choi.pipelines.sd.stages import blank_reference, reference_image

    crops = [blank_reference() if rgb is None or not sil.any() else reference_image(rgb, sil) for rgb, sil in pairs]
    return processor(images=crops, return_tensors="pt").pixel_values
