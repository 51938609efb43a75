"""Training recipe for choi-sd's stage 1: choi's mask model at Stable Diffusion scale (a Task for the one loop).

The model is :class:`~choi.models.mask_generator.MaskGenerator` (preset ``sd``: 128x128 masks,
107.9 M parameters), trained as choi-tiny's is (:class:`~choi.training.mask.MaskTask`: v-prediction,
every condition dropped at random, flips), with two changes of conditioning, both frozen parts a
choi-sd model folder names:

- the interaction text is read by the base's CLIP text encoder (free text, not 25 class names);
- each reference's identity enters as tokens from the folder's CLIP image encoder (the crop stage 2
  reads), beside its silhouette tokens; ``p_drop_identity`` replaces a reference's crop by the blank
  one, which is also what inference uses for a reference given only as a silhouette.

A run starts from scratch, or from the stage 1 of ``--model`` when that is one of these (a previous
run's ``RUN/model``). The run's ``RUN/model`` is the trained mask model plus a ``model_index.json``
that makes it a choi-sd model folder with this stage 1 (:func:`write_model_index`).

Example:
    >>> train_sd_mask("data/hoiw", "runs/sd-mask", model="models/sd", steps=20000, batch_size=64)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import PartialState

from choi.data.schema import Sample
from choi.data.shards import ShardDataset
from choi.errors import ChoiError
from choi.io import atomic_write_bytes
from choi.models.image_encoder import ReferenceEncoder, reference_pixels
from choi.models.mask_generator import MaskGenerator
from choi.models.text_encoder import SD_TEXT_ENCODER, TextEncoder, text_encoder_for
from choi.pipelines.sd.loading import mask_folder, read_sd_folder
from choi.pipelines.tiny.mask import MaskPipeline
from choi.training.diffusion import check_fraction
from choi.training.loop import train_recipe
from choi.training.mask import MaskTask, MaskTrainConfig, mask_collate

log = logging.getLogger(__name__)


@dataclass
class SDMaskTrainConfig(MaskTrainConfig):
    model: str = "sd"  # the mask model preset ("tiny" for tests: the same code path, small)
    sd_model: str = ""  # the choi-sd model folder: its base's CLIP text encoder and its CLIP image encoder
    p_drop_identity: float = 0.1  # per reference: its crop replaced by the blank one (silhouette-only requests)


class SDMaskCollate:
    """Samples → choi-tiny's mask batch plus ``ref_pixels`` (N, 2, 3, S, S): each reference's image-encoder input."""

    def __init__(self, size: int, processor: Any):
        self.size, self.processor = size, processor

    def __call__(self, samples: Sequence[Sample]) -> dict[str, Any]:
        batch = mask_collate(samples, self.size)
        pairs = [p for s in samples for p in ((s.human_ref, s.human_ref_mask), (s.object_ref, s.object_ref_mask))]
        pixels = reference_pixels(self.processor, pairs)
        return {**batch, "ref_pixels": pixels.view(len(samples), 2, *pixels.shape[1:])}


class SDMaskTask(MaskTask):
    """choi-sd stage 1's model, conditions and start for :func:`choi.training.loop.train`."""

    name = "sd-mask"
    config_cls = SDMaskTrainConfig
    size_option = "--resolution"
    ref_keys = ("ref_masks", "ref_pixels")

    def __init__(self, cfg: SDMaskTrainConfig):
        check_fraction("p_drop_identity", cfg.p_drop_identity)
        self.sd = read_sd_folder(cfg.sd_model)
        self.reference_encoder = ReferenceEncoder(self.sd.image_encoder)
        self.start = self._previous_stage1()
        super().__init__(cfg)
        self.blank = self.reference_encoder.pixels([(None, np.zeros((1, 1), bool))])  # (1, 3, S, S)

    def _previous_stage1(self) -> Path | None:
        """The stage 1 of ``--model`` when it is a choi-sd mask model (a previous run), else None (from scratch)."""
        if self.sd.stage1 == "choi-tiny":
            return None
        folder = mask_folder(self.sd.stage1, "--model stage1")
        config = MaskGenerator.load_config(folder)
        return folder if config.get("text_encoder") == SD_TEXT_ENCODER else None

    def model_overrides(self) -> dict[str, Any]:
        """The preset with the folder's encoders: CLIP text tokens of the base's width, identity of the encoder's."""
        text_config = json.loads((self.sd.base / "text_encoder" / "config.json").read_text(encoding="utf-8"))
        return {**super().model_overrides(), "text_encoder": SD_TEXT_ENCODER, "text_dim": text_config["hidden_size"],
                "image_dim": self.reference_encoder.dim}  # fmt: skip

    def load_text_encoder(self) -> TextEncoder:
        return text_encoder_for(self.model_config, self.sd.base)

    def build_model(self) -> torch.nn.Module:
        model = MaskGenerator(**self.model_config)
        if self.start is not None:
            try:
                model.load_state_dict(MaskGenerator.from_pretrained(self.start).state_dict())
            except RuntimeError:
                raise ChoiError(f"--model: its stage 1 {self.start} is not a '{self.cfg.model}' mask model with these "
                                "encoders; give --config as it was trained, or a folder whose stage1 is choi-tiny "
                                "to start from scratch") from None  # fmt: skip
            log.info("started from %s", self.start)
        return model

    def place(self, model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
        """The frozen text and image encoders to ``device`` in ``dtype`` (the mask model stays fp32)."""
        self.text_encoder.model.to(device, dtype)
        self.reference_encoder.model.to(device, dtype)

    def collate_fn(self) -> Callable[[Sequence[Sample]], dict[str, Any]]:
        return SDMaskCollate(self.model_config["sample_size"], self.reference_encoder.processor)

    def identity(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        pixels = batch["ref_pixels"]  # (N, 2, 3, S, S)
        drop = torch.rand(pixels.shape[:2], device=pixels.device) < self.cfg.p_drop_identity
        pixels = torch.where(drop[..., None, None, None], self.blank.to(pixels.device, pixels.dtype), pixels)
        return self.reference_encoder.embed(pixels.flatten(0, 1)).view(*pixels.shape[:2], -1)

    def pipeline(self, model: MaskGenerator, step: int) -> MaskPipeline:
        pipe = super().pipeline(model, step)
        pipe.reference_encoder = self.reference_encoder
        return pipe

    def config(self) -> dict[str, Any]:
        sd = self.sd
        return {**super().config(), "base": str(sd.base), "image_encoder": str(sd.image_encoder),
                "started_from": None if self.start is None else str(self.start)}  # fmt: skip


def train_sd_mask(
    data: str, out: str, model: str, config: str = "sd", resolution: int | None = None, steps: int = 20000,
    batch_size: int = 64, lr: float = 1e-4, workers: int = 1, seed: int = 0, resume: bool = False,
    validate_every: int = 0, class_balance: float = 0.0, **train_options: Any,
) -> Path:  # fmt: skip
    """Train choi-sd's stage 1 into ``out``; returns ``out/model``, a choi-sd model folder with it as stage 1.

    ``resolution``: the mask side (None: the preset's, 128 for ``sd``). ``train_options``:
    :class:`~choi.training.loop.TrainConfig` fields (grad_accum, gradient_checkpointing, mixed_precision).
    """
    if workers < 0:
        raise ChoiError("--workers must be non-negative")
    check_fraction("--class-balance", class_balance)
    ShardDataset(data, split="train")  # fail early, with the reader's message, on a bad dataset
    cfg = SDMaskTrainConfig(data=data, model=config, sd_model=model, batch_size=batch_size, num_workers=workers,
                            seed=seed, class_balance=class_balance, sample_size=resolution)  # fmt: skip
    task = SDMaskTask(cfg)
    final = train_recipe(task, out, steps, batch_size, lr, seed, resume, validate_every, **train_options)
    if PartialState().is_main_process:
        write_model_index(final, task)
    return final


def write_model_index(folder: Path, task: SDMaskTask) -> Path:
    """``RUN/model/model_index.json``: the source choi-sd folder with this run's mask model as its stage 1.

    The base, IP-Adapter, image encoder and a trained stage-2 adapter, if the source has one, are
    referred to by absolute path (never copied); ``stage1`` is ``"."``, the mask model beside the file.
    """
    sd = task.sd
    parts = {"base": sd.base, "ip_adapter": sd.ip_adapter, "image_encoder": sd.image_encoder, "stage1": "."}
    if sd.adapter is not None:
        parts["adapter"] = sd.adapter
    index = {**sd.index, "components": {k: str(v) for k, v in parts.items()}}
    atomic_write_bytes(folder / "model_index.json", (json.dumps(index, indent=2) + "\n").encode())
    return folder
