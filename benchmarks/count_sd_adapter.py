"""Trained parameters of choi-sd's stage-2 adapter at SD 1.5 size, per layout branch and identity-encoder width.

Built on the meta device from the SD 1.5 (inpainting) UNet's architecture: no weights are needed and
nothing is allocated. Usage: ``python benchmarks/count_sd_adapter.py``.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel

from choi.models.sd_adapter import LAYOUTS, SDAdapter

# the embedding widths the role projections take: CLIP ViT-H/14's projection (IP-Adapter SD1.5's
# encoder) and DINOv2's CLS token for its B/L/g models
ENCODERS = {"clip-vit-h": 1024, "dinov2-base": 768, "dinov2-large": 1024, "dinov2-giant": 1536}


def main() -> None:
    with torch.device("meta"):
        unet = UNet2DConditionModel(in_channels=9, cross_attention_dim=768, sample_size=64)  # SD 1.5 inpainting
        print(f"frozen UNet: {sum(p.numel() for p in unet.parameters()) / 1e6:.1f} M")
        for layout in LAYOUTS:
            for encoder, dim in ENCODERS.items():
                adapter = SDAdapter.from_base(unet, None, dim, layout=layout)
                parts: dict[str, int] = {}
                for name, param in adapter.named_parameters():
                    parts[name.split(".")[0]] = parts.get(name.split(".")[0], 0) + param.numel()
                sizes = ", ".join(f"{k} {v / 1e6:.3f} M" for k, v in parts.items())
                print(f"{layout:10s} {encoder:13s} trained {sum(parts.values()) / 1e6:6.1f} M: {sizes}")


if __name__ == "__main__":
    main()
