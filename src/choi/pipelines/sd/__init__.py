"""choi-sd: choi's two stages on the Stable Diffusion 1.x weights a user already has (zero-shot).

A choi-sd model folder holds only a ``model_index.json`` that refers to the user's folders
(``choi model sd`` writes it); see docs/choi-sd.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from choi.errors import ChoiError
from choi.pipelines.sd.loading import (
    DEFAULT_RESOLUTION,
    FAMILY,
    check_resolution,
    load_inpaint_pipeline,
    make_model_folder,
    mask_folder,
    sd_folder,
    size_multiple,
)
from choi.pipelines.sd.stages import SDImageStage, SDMaskStage, SDOptions

__all__ = ["FAMILY", "SDImageStage", "SDMaskStage", "SDOptions", "load", "make_model_folder"]


def load(folder: Path, index: dict[str, Any], model_id: str, torch_dtype: torch.dtype = torch.float32):
    """A choi-sd folder's stages: its ``model_index.json`` names the base, IP-Adapter, encoder and stage 1."""
    from choi.models.image_encoder import ReferenceEncoder
    from choi.pipelines.tiny.mask import MaskPipeline
    from choi.pipelines.tiny.stages import TinyMaskStage

    parts = sd_folder(folder, index)
    what = f"{folder.name}/model_index.json"
    base, ip_adapter, image_encoder = parts.base, parts.ip_adapter, parts.image_encoder
    stage1 = index["components"].get("stage1", "choi-tiny")  # as written: choi.json records it so
    # stage 1 is small: it stays in fp32 whatever dtype stage 2 runs in. choi-tiny's reads MiniLM; one trained
    # by `choi train mask --family sd` reads the base's CLIP text encoder and the references' CLIP image embeddings
    masks = MaskPipeline.from_pretrained(mask_folder(parts.stage1, what), sd_base=base)
    masks.model_id = f"{model_id}/stage1"
    multiple = size_multiple(base)
    resolution = check_resolution(index.get("resolution", DEFAULT_RESOLUTION), multiple, f"{what} resolution")
    adapter = parts.adapter  # a trained stage 2 (choi train image --family sd): RUN/model
    identity = parts.identity_encoder  # an adapter trained on DINOv2: that folder
    pipe = load_inpaint_pipeline(base, ip_adapter, image_encoder, torch_dtype, adapter, identity)
    if masks.model.config.image_dim:  # stage 1's identity tokens read the CLIP image encoder: stage 2's own
        # (shared, not a copy), unless stage 2 was trained on DINOv2; then CLIP's is loaded for stage 1 alone
        shared = pipe.image_encoder if identity is None else None
        masks.reference_encoder = ReferenceEncoder(image_encoder, model=shared)
        if masks.reference_encoder.dim != masks.model.config.image_dim:
            raise ChoiError(f"{what} stage1 reads {masks.model.config.image_dim}-wide image embeddings; the image "
                            f"encoder {image_encoder.name} gives {masks.reference_encoder.dim}")  # fmt: skip
    sources = {"id": model_id, "base": str(base), "ip_adapter": str(ip_adapter), "image_encoder": str(image_encoder),
               "stage1": str(stage1), "dtype": str(torch_dtype).removeprefix("torch.")}  # fmt: skip
    if adapter is not None:
        trained = pipe.choi_adapter.config
        sources.update(adapter=str(adapter), layout=trained.layout, identity_encoder=trained.identity_encoder)
        if identity is not None:
            sources["identity_encoder_path"] = str(identity)
    return SDMaskStage(TinyMaskStage(masks)), SDImageStage(pipe, resolution, multiple, sources), SDOptions
