"""Tiny, randomly initialised Stable Diffusion 1.x parts in exactly the public on-disk formats (seconds on a CPU).

- :func:`write_sd_folder`: a diffusers SD folder (``model_index.json``, ``unet/``, ``vae/``,
  ``text_encoder/``, ``tokenizer/`` with classic ``vocab.json``/``merges.txt``, ``scheduler/``,
  ``feature_extractor/``), inpainting (9-channel UNet) or plain (4-channel).
- :func:`write_ip_adapter`: the public IP-Adapter layout, ``models/ip-adapter_sd15.safetensors``
  (``image_proj.*`` / ``ip_adapter.*`` keys) beside ``models/image_encoder/`` (a
  ``CLIPVisionModelWithProjection`` folder).
- :func:`write_dinov2`: a ``Dinov2Model`` folder with its image processor (``--identity-encoder``).
- :func:`write_training_parts`: all of them plus two choi-sd model folders and a dataset, for training;
  :data:`FAST` (a 4-step run) and :func:`killed_after` (a task whose process dies mid-run).

Sizes follow diffusers' own ``get_dummy_components()``; the tokenizer's vocabulary is written here
by hand, since hf-internal-testing/tiny-random-clip cannot be downloaded.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from choi.training.loop import TrainConfig
from tiny_encoders import write_tiny_dino

CROSS_DIM = 32  # the UNet's cross-attention width = the text encoder's hidden size
IMAGE_EMBED_DIM = 32  # the image encoder's projection = what the IP-Adapter's image_proj takes
IMAGE_SIZE = 32  # the image encoder's input side
IP_TOKENS = 4  # ip-adapter_sd15: 4 image tokens per reference
DINO_DIM = 48  # not IMAGE_EMBED_DIM: the role projections take DINOv2's own width
SPECIAL = ("<|startoftext|>", "<|endoftext|>")
UNET = dict(
    sample_size=32,
    out_channels=4,
    layers_per_block=1,
    block_out_channels=(32, 64),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=CROSS_DIM,
    attention_head_dim=8,
    norm_num_groups=16,
)
WORDS = ("a", "photo", "of", "person", "ride", "riding", "bicycle", "kick", "ball", "carry", "hold", "umbrella")


def _bytes_to_unicode() -> list[str]:
    """GPT-2/CLIP's reversible map of the 256 bytes to printable characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_tokenizer(folder: Path) -> Path:
    """A classic CLIP BPE tokenizer: every byte alone and word-final, merges spelling a few words."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = _bytes_to_unicode()
    vocab = [*chars, *(c + "</w>" for c in chars)]
    merges: list[str] = []
    for word in WORDS:  # left-to-right merges: "r i" → "ri", "ri d" → "rid", "rid e</w>" → "ride</w>"
        pieces = [*word[:-1], word[-1] + "</w>"]
        while len(pieces) > 1:
            merged = pieces[0] + pieces[1]
            if f"{pieces[0]} {pieces[1]}" not in merges:
                merges.append(f"{pieces[0]} {pieces[1]}")
                vocab.append(merged) if merged not in vocab else None
            pieces = [merged, *pieces[2:]]
    vocab += list(SPECIAL)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    special = {"bos_token": SPECIAL[0], "eos_token": SPECIAL[1], "unk_token": SPECIAL[1], "pad_token": SPECIAL[1]}
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True, **special}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    return folder


def write_sd_folder(
    folder: Path, inpainting: bool = True, seed: int = 0, posterior_std: float | None = None,
    scaling_factor: float = 0.18215,
) -> Path:  # fmt: skip
    """A tiny SD 1.x diffusers folder: the VAE halves the side once, the UNet once more.

    A random VAE's posterior is wide (std ~0.9 against latent means that differ by ~0.1 between
    images), unlike a trained one's: ``posterior_std`` makes it that constant, and ``scaling_factor``
    (SD 1.x's 0.18215 by default) is what the latents are multiplied by, 1 / their std in a trained SD.
    """
    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    UNet2DConditionModel(**UNET, in_channels=9 if inpainting else 4).save_pretrained(folder / "unet")
    vae = AutoencoderKL(
        block_out_channels=(16, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=16,
        sample_size=64,
        scaling_factor=scaling_factor,
    )
    if posterior_std is not None:  # quant_conv's second half is the log-variance
        with torch.no_grad():
            vae.quant_conv.weight[4:] = 0
            vae.quant_conv.bias[4:] = 2 * math.log(posterior_std)
    vae.save_pretrained(folder / "vae")
    write_tokenizer(folder / "tokenizer")
    vocab_size = len(json.loads((folder / "tokenizer" / "vocab.json").read_text()))
    text = CLIPTextConfig(hidden_size=CROSS_DIM, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                          vocab_size=vocab_size, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
                          pad_token_id=vocab_size - 1, max_position_embeddings=77)  # fmt: skip
    CLIPTextModel(text).save_pretrained(folder / "text_encoder")
    DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                  set_alpha_to_one=False, steps_offset=1).save_pretrained(folder / "scheduler")  # fmt: skip
    CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size=IMAGE_SIZE).save_pretrained(
        folder / "feature_extractor"
    )
    index = {
        "_class_name": "StableDiffusionInpaintPipeline" if inpainting else "StableDiffusionPipeline",
        "_diffusers_version": "0.42.1",
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


def write_ip_adapter(folder: Path, seed: int = 0) -> Path:
    """``folder/models/ip-adapter_sd15.safetensors`` + ``folder/models/image_encoder/``; returns the weights file.

    The ``ip_adapter.{k}`` keys number the UNet's attention layers as the original IP-Adapter does:
    self-attentions even, cross-attentions (the ones with weights) odd, in ``attn_processors`` order.
    """
    torch.manual_seed(seed)
    models = folder / "models"
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                              image_size=IMAGE_SIZE, patch_size=8, projection_dim=IMAGE_EMBED_DIM)  # fmt: skip
    CLIPVisionModelWithProjection(vision).save_pretrained(models / "image_encoder")
    weights = {
        "image_proj.proj.weight": torch.randn(IP_TOKENS * CROSS_DIM, IMAGE_EMBED_DIM) * 0.05,
        "image_proj.proj.bias": torch.zeros(IP_TOKENS * CROSS_DIM),
        "image_proj.norm.weight": torch.ones(CROSS_DIM),
        "image_proj.norm.bias": torch.zeros(CROSS_DIM),
    }
    unet = UNet2DConditionModel(**UNET, in_channels=4)  # only its layer names and widths are read
    cross = [name for name in unet.attn_processors if not name.endswith("attn1.processor")]
    for i, name in enumerate(cross):
        width = unet.get_submodule(name.removesuffix(".processor")).to_q.out_features
        key = 2 * i + 1
        weights[f"ip_adapter.{key}.to_k_ip.weight"] = torch.randn(width, CROSS_DIM) * 0.2
        weights[f"ip_adapter.{key}.to_v_ip.weight"] = torch.randn(width, CROSS_DIM) * 0.2
    models.mkdir(parents=True, exist_ok=True)
    path = models / "ip-adapter_sd15.safetensors"
    save_file({k: v.contiguous() for k, v in weights.items()}, str(path))
    return path


def write_dinov2(folder: Path) -> Path:
    """A tiny DINOv2 folder (``Dinov2Model`` of width :data:`DINO_DIM` + its 56 px image processor):
    tiny_encoders' builder, the one choi's DINO metrics are tested with."""
    return write_tiny_dino(folder, hidden_size=DINO_DIM)


# --- training -------------------------------------------------------------------------------------

FAST = TrainConfig(
    steps=4, batch_size=2, lr=1e-3, warmup_steps=1, checkpoint_every=2, log_every=1, mixed_precision="no"
)


def write_training_parts(root: Path) -> dict[str, Path]:
    """An IP-Adapter, an inpainting and a plain base, a 32 px choi-sd model folder on each ("inpaint",
    "plain"), the 8 + 2 random samples of ``write_tiny_dataset`` ("data") and a DINOv2 folder ("dino")."""
    from choi.pipelines.sd import make_model_folder
    from fake_samples import write_tiny_dataset

    ip = write_ip_adapter(root / "IP-Adapter")
    parts: dict[str, Path] = {"ip": ip}
    for kind in ("inpaint", "plain"):
        parts[f"base_{kind}"] = write_sd_folder(root / kind, inpainting=kind == "inpaint")
        parts[kind] = make_model_folder(root / f"model-{kind}", parts[f"base_{kind}"], ip, resolution=32)
    (root / "data").mkdir()
    return {**parts, "data": write_tiny_dataset(root / "data"), "dino": write_dinov2(root / "dinov2")}


def killed_after(task_cls: type, batches: int = 3) -> type:
    """``task_cls`` dying (as a killed process would) when asked for batch ``batches + 1``; with :data:`FAST`
    that is after step 3, checkpointed at step 2."""

    class Killed(task_cls):
        served = 0

        def batches(self, epoch):
            for batch in super().batches(epoch):
                if type(self).served == batches:
                    raise KeyboardInterrupt
                type(self).served += 1
                yield batch

    return Killed


def untrained_and_zero_shot(task: Any, source: Path, root: Path) -> tuple[Path, Path]:
    """``root/run-model``: ``task``'s untrained adapter (seed 0) as a run's model folder; ``root/zero-shot``: the
    zero-shot folder ``source`` with IP scales 1, which an untrained adapter must reproduce."""
    from choi.training.sd import write_model_index

    torch.manual_seed(0)
    task.build_model().save_pretrained(root / "run-model")
    write_model_index(root / "run-model", task)
    zero_shot = json.loads((source / "model_index.json").read_text())
    zero_shot["options"] = {"ip_scale_human": 1.0, "ip_scale_object": 1.0}
    (root / "zero-shot").mkdir()
    (root / "zero-shot" / "model_index.json").write_text(json.dumps(zero_shot))
    return root / "zero-shot", root / "run-model"
