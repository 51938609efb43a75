"""Tiny, randomly initialised DINOv2 and CLIP folders in the public on-disk layouts (seconds on a CPU).

The same files a clone of ``facebook/dinov2-base`` or ``openai/clip-vit-large-patch14`` has:
``config.json`` + ``model.safetensors``, an image processor config, and for CLIP the classic BPE
tokenizer files ``vocab.json`` + ``merges.txt``, written by hand.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
import transformers

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def write_tiny_dino(folder: Path, hidden_size: int = TINY["hidden_size"]) -> Path:
    """A DINOv2 folder with its own 56-pixel image processor (as hub checkpoints ship one)."""
    torch.manual_seed(0)
    config = transformers.Dinov2Config(**{**TINY, "hidden_size": hidden_size}, image_size=56, patch_size=14)
    transformers.Dinov2Model(config).save_pretrained(folder)
    processor = transformers.BitImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 56, "width": 56})
    processor.save_pretrained(folder)
    return folder


def write_clip_tokenizer(folder: Path) -> int:
    """CLIP's BPE files for lowercase words: every letter alone and word-final, a few merges. Returns the vocab size."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase:
        vocab[c], vocab[c + "</w>"] = len(vocab), len(vocab) + 1
    merges = [("i", "n"), ("in", "g</w>"), ("e", "r")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return len(vocab)


def write_tiny_clip(folder: Path, tokenizer: bool = True) -> Path:
    """A full ``CLIPModel`` folder (text tower included, as openai/clip-* checkpoints are) with a
    ``CLIPImageProcessor`` config and, unless ``tokenizer`` is False, ``vocab.json`` + ``merges.txt``."""
    vocab_size = write_clip_tokenizer(folder) if tokenizer else 64
    torch.manual_seed(0)
    config = transformers.CLIPConfig(
        text_config=dict(**TINY, vocab_size=vocab_size, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(**TINY, image_size=56, patch_size=14),
        projection_dim=16,
    )
    transformers.CLIPModel(config).save_pretrained(folder)
    transformers.CLIPImageProcessor(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56}).save_pretrained(
        folder
    )
    return folder
