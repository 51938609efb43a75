"""The paper's DINO-* and CLIP-I identity metrics and CLIP-T, computed with DINOv2 / CLIP weights the user has.

Nothing is downloaded: :func:`load_dino` and :func:`load_clip` read a local folder in the Hugging
Face layout (``config.json`` + ``model.safetensors``, optionally ``preprocessor_config.json`` and,
for CLIP-T, the tokenizer's ``vocab.json`` + ``merges.txt``), e.g. a ``git clone`` of
``facebook/dinov2-base`` or ``openai/clip-vit-large-patch14``.

What is compared (all cosines in percent, see :mod:`choi.evaluation.metrics`):
- ``*_human`` / ``*_object``: the person / object region of the generated image, found by choi's
  own segmenters on that image and the request's box (:mod:`choi.evaluation.regions`), against the
  human / object reference image. Without regions, the whole generated image. Ground-truth masks or
  boxes of the target never enter, so a method cannot be scored on information it was not given.
- ``*_pair``: the whole generated image against the pair reference when one is given (the paper's
  CLIP-I), else the mean of ``*_human`` and ``*_object``.
- ``clip_t``: the whole generated image against the CLIP text embedding of the interaction's sentence.

Example:
    >>> dino = load_dino("weights/dinov2-base")  # doctest: +SKIP
    >>> regions = find_regions(generated, request_boxes)  # doctest: +SKIP
    >>> scores = dino_scores(dino, generated, human_refs, object_refs, regions=regions)  # doctest: +SKIP
    >>> float(scores["dino_human"].mean())  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from choi.errors import ChoiError
from choi.evaluation.metrics import cosine_similarity, pair_similarity
from choi.evaluation.regions import Regions

logger = logging.getLogger(__name__)

Images = Sequence[np.ndarray] | np.ndarray  # N images (H, W, 3) uint8; sizes may differ

# DINOv2's own evaluation transform (resize 256, centre crop 224), used when a folder has no
# preprocessor config. Hub DINOv2 configs say image_size=518 (the last training stage), but
# their preprocessors crop 224; the position embeddings are interpolated either way.
_DINO_RESIZE, _DINO_CROP = 256, 224


class _DinoCls(nn.Module):
    """DINOv2 -> its final-layer-normed CLS token, the image embedding DINO metrics use."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).pooler_output  # (N, D) == last_hidden_state[:, 0]


class _ClipImage(nn.Module):
    """CLIP vision tower + visual projection -> the image embedding CLIP-I uses."""

    def __init__(self, vision_model: nn.Module, visual_projection: nn.Module) -> None:
        super().__init__()
        self.vision_model = vision_model
        self.visual_projection = visual_projection

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pooled = self.vision_model(pixel_values=pixel_values).pooler_output  # (N, D_vision)
        return self.visual_projection(pooled)  # (N, D_proj)


class _ClipText(nn.Module):
    """CLIP text tower + text projection -> the text embedding CLIP-T uses."""

    def __init__(self, text_model: nn.Module, text_projection: nn.Module) -> None:
        super().__init__()
        self.text_model = text_model
        self.text_projection = text_projection

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = self.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output  # (N, D_text)
        return self.text_projection(pooled)  # (N, D_proj)


class FoundationEmbedder:
    """Unit-norm image embeddings from a frozen foundation model (DINOv2 CLS or CLIP image embed).

    Deterministic: eval mode, no gradients, no random augmentation. Build it with :func:`load_dino`
    or :func:`load_clip`.

    Example:
        >>> emb = load_clip("weights/clip-vit-large-patch14")  # doctest: +SKIP
        >>> emb([image_a, image_b]).shape  # doctest: +SKIP
        (2, 768)
    """

    def __init__(
        self,
        kind: str,
        model: nn.Module,
        processor: Any,
        device: str | torch.device = "cpu",
        batch_size: int = 16,
        text: tuple[nn.Module, Any, int] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.kind = kind  # "dino" | "clip"; the score functions check it so the two are not mixed up
        self.model = model.eval().to(device)
        self.processor = processor
        self.device = torch.device(device)
        self.batch_size = batch_size
        # CLIP with its text tower and tokenizer: (text model, tokenizer, max tokens); None otherwise
        self.text = None if text is None else (text[0].eval().to(device), *text[1:])

    @torch.inference_mode()
    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``N`` sentences; returns ``(N, D)`` float32, each row of unit length."""
        if self.text is None:
            raise ChoiError(
                f"this {self.kind} embedder has no text tower or tokenizer: CLIP-T needs a full CLIP folder"
            )
        model, tokenizer, max_tokens = self.text
        texts = list(texts)
        if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise ValueError("texts must be a non-empty list of non-empty sentences")
        out = []
        for start in range(0, len(texts), self.batch_size):
            tokens = tokenizer(
                texts[start : start + self.batch_size],
                padding="max_length",
                max_length=max_tokens,
                truncation=True,
                return_tensors="pt",
            )
            feats = model(tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device))  # (B, D)
            out.append(F.normalize(feats.float(), dim=-1).cpu().numpy())
        return np.concatenate(out, axis=0)

    @torch.inference_mode()
    def __call__(self, images: Images) -> np.ndarray:
        """Embed ``N`` uint8 RGB images; returns ``(N, D)`` float32, each row of unit length."""
        images = _as_images(images, "images")
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size]
            pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"]  # (B, 3, S, S)
            feats = self.model(pixels.to(self.device, torch.float32))  # (B, D)
            out.append(F.normalize(feats.float(), dim=-1).cpu().numpy())
        return np.concatenate(out, axis=0)


# --- loading ----------------------------------------------------------------------------------


def _read_config(path: str | Path, what: str, model_types: tuple[str, ...]) -> tuple[Path, dict[str, Any]]:
    folder = Path(path)
    hint = f"a local {what} folder with config.json and model.safetensors"
    if not folder.is_dir():
        raise ChoiError(f"{what} weights folder not found: {folder} (expected {hint})")
    if not (folder / "config.json").is_file():
        raise ChoiError(f"{what} weights folder {folder} has no config.json (expected {hint})")
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ChoiError(f"cannot read {folder / 'config.json'}: {err}") from None
    if config.get("model_type") not in model_types:
        raise ChoiError(
            f"{folder} holds a {config.get('model_type')!r} model, expected one of {model_types} for {what}"
        )
    return folder, config


def _from_pretrained(cls: Any, folder: Path, what: str) -> nn.Module:
    """Load weights strictly from disk; a missing or mis-shaped weight is an error, not a random init."""
    try:
        model, info = cls.from_pretrained(folder, local_files_only=True, use_safetensors=True, output_loading_info=True)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ChoiError(f"cannot load {what} weights from {folder}: {first_line}") from None
    bad = sorted(info.get("missing_keys", ())) + sorted(info.get("mismatched_keys", ()))
    if bad:
        raise ChoiError(f"{what} weights in {folder} are incomplete: {len(bad)} missing/mismatched, e.g. {bad[0]}")
    return model


def _load_processor(folder: Path, default: Any) -> Any:
    # A checkpoint's own preprocessing is what its published numbers used; fall back only without one.
    from transformers import AutoImageProcessor

    if (folder / "preprocessor_config.json").is_file():
        try:
            return AutoImageProcessor.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as err:
            raise ChoiError(f"cannot read the image processor config in {folder}: {err}") from None
    logger.info("%s has no preprocessor_config.json; using default preprocessing", folder)
    return default()


def load_dino(path: str | Path, device: str | torch.device = "cpu", batch_size: int = 16) -> FoundationEmbedder:
    """A DINOv2 CLS-token embedder from a local ``transformers`` ``Dinov2Model`` folder.

    Without ``preprocessor_config.json``: resize the short side to 256 (bicubic), centre-crop 224,
    ImageNet mean/std, DINOv2's evaluation transform. Raises :class:`ChoiError` for a missing or
    invalid folder.
    """
    model, processor = load_dinov2(path)
    return FoundationEmbedder("dino", _DinoCls(model), processor, device, batch_size)


def load_dinov2(path: str | Path) -> tuple[nn.Module, Any]:
    """A local ``transformers`` ``Dinov2Model`` folder → (the model, in fp32 on the CPU, its image processor).

    The processor is the folder's own ``preprocessor_config.json``, else DINOv2's evaluation transform
    (see :func:`load_dino`). Raises :class:`ChoiError` for a missing or invalid folder.
    """
    from transformers import BitImageProcessor, Dinov2Model
    from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    folder, _ = _read_config(path, "DINOv2", ("dinov2",))
    model = _from_pretrained(Dinov2Model, folder, "DINOv2")
    default = _bicubic_processor(
        BitImageProcessor, _DINO_RESIZE, _DINO_CROP, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    )
    return model, _load_processor(folder, default)


def _bicubic_processor(kind: Any, short_edge: int, crop: int, mean: Any, std: Any) -> Any:
    """A function making ``kind`` (an image processor class): bicubic short-side resize, centre crop, mean/std."""
    from transformers.image_utils import PILImageResampling

    def default() -> Any:
        return kind(size={"shortest_edge": short_edge}, crop_size={"height": crop, "width": crop},
                    resample=PILImageResampling.BICUBIC, image_mean=mean, image_std=std)  # fmt: skip

    return default


def load_clip(path: str | Path, device: str | torch.device = "cpu", batch_size: int = 16) -> FoundationEmbedder:
    """A CLIP image embedder from a local ``CLIPModel`` folder or ``CLIPVisionModelWithProjection`` folder.

    A full CLIP folder is loaded as ``CLIPModel`` (its top-level ``projection_dim`` is not stored in
    the vision config, so loading the vision class from it would mis-size the projection) and only
    the vision tower and projection are kept. Without ``preprocessor_config.json``: resize and
    centre-crop to the model's ``image_size`` (bicubic), OpenAI CLIP mean/std. Raises
    :class:`ChoiError` for a missing or invalid folder.
    """
    from transformers import CLIPImageProcessor, CLIPModel, CLIPVisionModelWithProjection
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    folder, config = _read_config(path, "CLIP", ("clip", "clip_vision_model"))
    text = None
    if config["model_type"] == "clip":
        full = _from_pretrained(CLIPModel, folder, "CLIP")
        embed = _ClipImage(full.vision_model, full.visual_projection)
        image_size = full.config.vision_config.image_size
        tokenizer = _load_tokenizer(folder)
        if tokenizer is not None:
            max_tokens = min(tokenizer.model_max_length, full.config.text_config.max_position_embeddings)
            text = (_ClipText(full.text_model, full.text_projection), tokenizer, max_tokens)
    else:
        vision = _from_pretrained(CLIPVisionModelWithProjection, folder, "CLIP")
        embed = _ClipImage(vision.vision_model, vision.visual_projection)
        image_size = vision.config.image_size

    default = _bicubic_processor(CLIPImageProcessor, image_size, image_size, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
    return FoundationEmbedder("clip", embed, _load_processor(folder, default), device, batch_size, text)


def _load_tokenizer(folder: Path) -> Any:
    """CLIP's BPE tokenizer from ``vocab.json`` + ``merges.txt`` (or ``tokenizer.json``); None without them."""
    from transformers import CLIPTokenizer

    if (
        not ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file())
        and not (folder / "tokenizer.json").is_file()
    ):
        logger.info("%s has no tokenizer files (vocab.json, merges.txt): CLIP-T is not available", folder)
        return None
    try:
        return CLIPTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ChoiError(f"cannot read the CLIP tokenizer in {folder}: {first_line}") from None


# --- scores -----------------------------------------------------------------------------------


def _as_images(images: Images, name: str) -> list[np.ndarray]:
    items = list(images)
    if not items:
        raise ValueError(f"{name} is empty")
    for i, im in enumerate(items):
        if not (isinstance(im, np.ndarray) and im.ndim == 3 and im.shape[2] == 3 and im.dtype == np.uint8):
            shape = getattr(im, "shape", None)
            raise ValueError(f"{name}[{i}] must be an (H, W, 3) uint8 image, got {type(im).__name__} {shape}")
        if im.shape[0] == 0 or im.shape[1] == 0:
            raise ValueError(f"{name}[{i}] has no pixels: shape {im.shape}")
    return items


def identity_scores(
    embedder: FoundationEmbedder,
    generated: Images,
    human_refs: Images,
    object_refs: Images,
    pair_refs: Images | None = None,
    regions: Regions | None = None,
) -> dict[str, np.ndarray]:
    """Per-sample ``human`` / ``object`` / ``pair`` cosine similarities (percent, each ``(N,)``).

    ``regions`` are the person and object regions found in ``generated``
    (:func:`~choi.evaluation.regions.find_regions`); without them the whole image stands for both.
    See the module docstring for what is compared with what.
    """
    gen = _as_images(generated, "generated")
    humans = _as_images(human_refs, "human_refs")
    objects = _as_images(object_refs, "object_refs")
    n = len(gen)
    if len(humans) != n or len(objects) != n:
        raise ValueError(f"got {n} generated images but {len(humans)} human and {len(objects)} object refs")
    if regions is None:
        human_regions, object_regions = gen, gen
    else:
        human_regions = _as_images(regions.human, "regions.human")
        object_regions = _as_images(regions.object, "regions.object")
        if len(human_regions) != n or len(object_regions) != n:
            raise ValueError(f"got {n} generated images but regions for {len(human_regions)}")
    human = cosine_similarity(embedder(human_regions), embedder(humans))
    obj = cosine_similarity(embedder(object_regions), embedder(objects))
    if pair_refs is None:
        pair = pair_similarity(human, obj)
    else:
        pairs = _as_images(pair_refs, "pair_refs")
        if len(pairs) != n:
            raise ValueError(f"got {n} generated images but {len(pairs)} pair refs")
        pair = cosine_similarity(embedder(gen), embedder(pairs))
    return {"human": human, "object": obj, "pair": pair}


def _scores_for(
    kind: str, prefix: str, embedder: FoundationEmbedder, *args: Any, **kwargs: Any
) -> dict[str, np.ndarray]:
    if embedder.kind != kind:
        raise ValueError(f"{prefix} scores need a {kind!r} embedder, got a {embedder.kind!r} one")
    return {f"{prefix}_{k}": v for k, v in identity_scores(embedder, *args, **kwargs).items()}


def dino_scores(embedder: FoundationEmbedder, *args: Any, **kwargs: Any) -> dict[str, np.ndarray]:
    """The paper's DINO-human / DINO-object / DINO-pair (``dino_*``): :func:`identity_scores`'s arguments."""
    return _scores_for("dino", "dino", embedder, *args, **kwargs)


def clip_scores(embedder: FoundationEmbedder, *args: Any, **kwargs: Any) -> dict[str, np.ndarray]:
    """CLIP-I (``clip_i_human``, ``clip_i_object``, ``clip_i_pair``): :func:`identity_scores`'s arguments."""
    return _scores_for("clip", "clip_i", embedder, *args, **kwargs)


def clip_t_scores(embedder: FoundationEmbedder, generated: Images, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """CLIP-T: ``clip_t``, the whole image against the sentence of its interaction (percent, ``(N,)``)."""
    if embedder.kind != "clip":
        raise ValueError(f"clip_t scores need a 'clip' embedder, got a {embedder.kind!r} one")
    gen = _as_images(generated, "generated")
    if len(texts) != len(gen):
        raise ValueError(f"got {len(gen)} generated images but {len(texts)} texts")
    return {"clip_t": cosine_similarity(embedder(gen), embedder.embed_text(texts))}


# --- choi eval ----------------------------------------------------------------------------------


@dataclass
class FoundationMetrics:
    """The DINO / CLIP rows of ``choi eval``: the encoders the user gave, scoring a method's images.

    Example:
        >>> metrics = FoundationMetrics.load("weights/dinov2-base", "weights/clip-vit-large-patch14")  # doctest: +SKIP
        >>> metrics(images, regions, human_refs, object_refs, texts)["dino_human"]  # doctest: +SKIP
    """

    dino: FoundationEmbedder | None = None
    clip: FoundationEmbedder | None = None

    @classmethod
    def load(cls, dino: str | Path | None = None, clip: str | Path | None = None) -> FoundationMetrics | None:
        """The encoders in the given folders; None when neither is given."""
        if dino is None and clip is None:
            return None
        metrics = cls(load_dino(dino) if dino else None, load_clip(clip) if clip else None)
        if metrics.clip is not None and metrics.clip.text is None:
            logger.warning("--clip %s has no text tower or tokenizer: CLIP-T is skipped", clip)
        return metrics

    def __call__(
        self,
        images: Images,
        regions: Regions,
        human_refs: Images,
        object_refs: Images,
        texts: Sequence[str],
    ) -> dict[str, np.ndarray]:
        """Per-sample scores, each ``(N,)`` in percent, plus ``human_found`` / ``object_found`` (0 or 100)."""
        scores: dict[str, np.ndarray] = {}
        if self.dino is not None:
            scores |= dino_scores(self.dino, images, human_refs, object_refs, regions=regions)
        if self.clip is not None:
            scores |= clip_scores(self.clip, images, human_refs, object_refs, regions=regions)
            if self.clip.text is not None:
                scores |= clip_t_scores(self.clip, images, texts)
        scores["human_found"] = 100.0 * regions.human_found
        scores["object_found"] = 100.0 * regions.object_found
        return scores
