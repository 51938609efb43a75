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
    check_base,
    check_image_encoder,
    check_ip_adapter,
    check_resolution,
    load_inpaint_pipeline,
    make_model_folder,
    mask_folder,
    size_multiple,
)
from choi.pipelines.sd.stages import SDImageStage, SDMaskStage, SDOptions

__all__ = ["FAMILY", "SDImageStage", "SDMaskStage", "SDOptions", "load", "make_model_folder"]


def load(folder: Path, index: dict[str, Any], model_id: str, torch_dtype: torch.dtype = torch.float32):
    """A choi-sd folder's stages: its ``model_index.json`` names the base, IP-Adapter, encoder and stage 1."""
    from choi.models.image_encoder import ReferenceEncoder
    from choi.pipelines.tiny.mask import MaskPipeline
    from choi.pipelines.tiny.stages import TinyMaskStage

    parts = index.get("components", {})
    missing = [k for k in ("base", "ip_adapter") if not isinstance(parts.get(k), str)]
    if missing:
        raise ChoiError(f"{folder}/model_index.json lacks components {', '.join(missing)}; rerun `choi model sd`")
    what = f"{folder.name}/model_index.json"
    base = check_base(folder / parts["base"], f"{what} base")
    ip_adapter = check_ip_adapter(folder / parts["ip_adapter"], f"{what} ip_adapter")
    encoder = parts.get("image_encoder")
    encoder = None if encoder is None else folder / encoder
    image_encoder = check_image_encoder(encoder, ip_adapter, f"{what} image_encoder")
    stage1 = parts.get("stage1", "choi-tiny")
    # stage 1 is small: it stays in fp32 whatever dtype stage 2 runs in. choi-tiny's reads MiniLM; one trained
    # by `choi train mask --family sd` reads the base's CLIP text encoder and the references' CLIP image embeddings
    masks = MaskPipeline.from_pretrained(mask_folder(stage1 if stage1 == "choi-tiny" else folder / stage1, what),
                                         sd_base=base)  # fmt: skip
    masks.model_id = f"{model_id}/stage1"
    multiple = size_multiple(base)
    resolution = check_resolution(index.get("resolution", DEFAULT_RESOLUTION), multiple, f"{what} resolution")
    adapter = parts.get("adapter")  # a trained stage 2 (choi train image --family sd): RUN/model
    adapter = None if adapter is None else folder / adapter
    identity = parts.get("identity_encoder")  # an adapter trained on DINOv2: that folder
    identity = None if identity is None else (folder / identity).resolve()
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
        sources.update(adapter=str(adapter.resolve()), layout=trained.layout, identity_encoder=trained.identity_encoder)
        if identity is not None:
            sources["identity_encoder_path"] = str(identity)
    return SDMaskStage(TinyMaskStage(masks)), SDImageStage(pipe, resolution, multiple, sources), SDOptions
