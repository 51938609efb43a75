"""Training recipe for choi-sd's stage 2 on the user's Stable Diffusion 1.x weights (a Task for the one loop).

Frozen: the base's VAE, CLIP text encoder and UNet, and the identity encoder (the IP-Adapter's CLIP
image encoder, or a DINOv2 folder: ``identity_encoder``), named by a choi-sd model folder (``choi
model sd`` writes it). Trained: one :class:`~choi.models.sd_adapter.SDAdapter` — the layout branch,
the person and object projections and the decoupled cross-attention, initialised from the
IP-Adapter file so that training starts from the zero-shot model (DINOv2's projections start random).

Per sample: the target at ``resolution``; with ``layout="controlnet"`` the layout (person mask,
object mask) and the background with the region removed go to the ControlNet as a 6-channel image
(person, object, known, RGB x known); with ``layout="inpaint"`` the person and object masks go to
the UNet's ``conv_in`` as 2 more channels. Each reference is cut out on white as at inference and
encoded by the identity encoder; the prompt is the sample's own sentence. With an inpainting base
(9-channel UNet) the UNet also gets its own mask and masked-image channels. Condition dropout for
classifier-free guidance never skips a branch (every rank must use every parameter): a dropped
reference is the blank white crop, a dropped text the empty prompt, a dropped background "nothing
known".

The run's ``RUN/model`` is a choi-sd model folder (:func:`write_model_index`).

Example:
    >>> train_sd_image("data/hoiw", "runs/sd-image", model="models/sd", resolution=512, steps=20000)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import PartialState
from PIL import Image
from torch.utils.data import DataLoader

from choi.data.schema import Sample
from choi.data.shards import ShardDataset
from choi.errors import ChoiError
from choi.io import atomic_write_bytes
from choi.models.conditioning import layout_region
from choi.models.sd_adapter import LAYOUTS, SDAdapter, identity_embeds, layout_control
from choi.training.diffusion import check_fraction, diffusion_loss
from choi.training.loop import epoch_generator, train_recipe

log = logging.getLogger(__name__)


@dataclass
class SDImageTrainConfig:
    data: str  # dataset folder with a train split
    model: str  # choi-sd model folder: its model_index.json names the base, IP-Adapter and image encoder
    resolution: int = 512  # SD 1.x's own; a multiple of the base's size multiple (64 for SD 1.x)
    batch_size: int = 4
    num_workers: int = 1
    shuffle_buffer: int = 1000
    seed: int = 0
    # IP-Adapter's recipe drops text and image 5% each and both 5%; choi drops each role on its own
    p_drop_text: float = 0.1
    p_drop_human: float = 0.05
    p_drop_object: float = 0.05
    p_drop_background: float = 0.3  # choi-tiny's: generation without a background is asked for too
    lora_rank: int = 0  # > 0: also a LoRA of this rank on the frozen UNet's attention projections (needs peft)
    layout: str = "controlnet"  # or "inpaint": no ControlNet, an inpainting base's own channels (models/sd_adapter.py)
    identity_encoder: str | None = None  # a DINOv2 folder; None: the IP-Adapter's CLIP image encoder
    # validation (choi.training.sd_validation): held-out samples through the real stage 2; 0 samples: none
    val_samples: int = 4
    val_steps: int = 20
    val_guidance: float | None = None  # None: choi-sd's default


class SDBase:
    """The frozen parts a choi-sd model folder names, loaded in fp32 on the CPU (``place`` moves them).

    ``identity_encoder``: a DINOv2 folder to embed the references with; by default the one a trained
    run's folder names (``components.identity_encoder``), else the IP-Adapter's CLIP image encoder.
    """

    def __init__(self, folder: str | Path, identity_encoder: str | Path | None = None):
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from safetensors.torch import load_file
        from transformers import CLIPTextModel, CLIPTokenizer

        from choi.pipelines.sd.loading import load_identity_encoder, read_sd_folder, size_multiple
        from choi.quiet import quiet_loading

        parts = read_sd_folder(folder)
        self.base, self.ip_adapter, self.image_encoder_path = parts.base, parts.ip_adapter, parts.image_encoder
        self.adapter = parts.adapter  # a trained run's RUN/model: training goes on from its adapter
        if identity_encoder is None:  # a trained run's folder: the DINOv2 it was trained with, if any
            identity_encoder = parts.identity_encoder
        self.identity_encoder = "clip" if identity_encoder is None else "dinov2"
        self.identity_path = self.image_encoder_path if identity_encoder is None else Path(identity_encoder).resolve()
        self.multiple = size_multiple(self.base)
        kw = dict(local_files_only=True)
        with quiet_loading():
            self.tokenizer = CLIPTokenizer.from_pretrained(self.base, subfolder="tokenizer", **kw)
            self.text_encoder = CLIPTextModel.from_pretrained(self.base, subfolder="text_encoder", **kw)
            self.vae = AutoencoderKL.from_pretrained(self.base, subfolder="vae", **kw)
            self.unet = UNet2DConditionModel.from_pretrained(self.base, subfolder="unet", **kw)
            self.noise = DDPMScheduler.from_pretrained(self.base, subfolder="scheduler", **kw)
            what = "--identity-encoder" if identity_encoder is not None else "image encoder"
            self.image_encoder, self.processor = load_identity_encoder(self.identity_encoder, self.identity_path,
                                                                       what=what)  # fmt: skip
        config = self.image_encoder.config  # what the projections take: CLIP's projection, DINOv2's CLS
        self.embed_dim = config.projection_dim if self.identity_encoder == "clip" else config.hidden_size
        self.ip_state = load_file(str(self.ip_adapter))
        self.inpainting = self.unet.config.in_channels == 9
        self.vae_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        for part in self.frozen():
            part.requires_grad_(False).eval()

    def frozen(self) -> tuple[torch.nn.Module, ...]:
        return self.vae, self.text_encoder, self.image_encoder, self.unet


class SDCollate:
    """Samples → a batch at ``resolution``: target in [-1, 1], role masks, background, reference pixels, token ids."""

    def __init__(self, resolution: int, tokenizer: Any, processor: Any):
        self.resolution, self.tokenizer, self.processor = resolution, tokenizer, processor

    def _image(self, rgb: np.ndarray) -> torch.Tensor:
        image = Image.fromarray(rgb).resize((self.resolution, self.resolution), Image.BICUBIC)
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255

    def _mask(self, mask: np.ndarray) -> torch.Tensor:
        image = Image.fromarray(mask.astype(np.uint8) * 255).resize((self.resolution,) * 2, Image.NEAREST)
        return torch.from_numpy(np.asarray(image) > 127).float()

    def references(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> torch.Tensor:
        """(rgb, silhouette) pairs → CLIP pixel values, each cut out on white as at inference (blank if empty)."""
        from choi.pipelines.sd.stages import blank_reference, reference_image

        crops = [reference_image(rgb, sil) if sil.any() else blank_reference() for rgb, sil in pairs]
        return self.processor(images=crops, return_tensors="pt").pixel_values

    def token_ids(self, texts: Sequence[str]) -> torch.Tensor:
        tok = self.tokenizer
        return tok(list(texts), padding="max_length", max_length=tok.model_max_length, truncation=True,
                   return_tensors="pt").input_ids  # fmt: skip

    def __call__(self, samples: Sequence[Sample]) -> dict[str, Any]:
        pairs = [p for s in samples for p in ((s.human_ref, s.human_ref_mask), (s.object_ref, s.object_ref_mask))]
        refs = self.references(pairs)
        background = [s.background if s.background is not None else np.zeros_like(s.image) for s in samples]
        return {
            "image": torch.stack([self._image(s.image) for s in samples]) * 2 - 1,  # (N, 3, R, R)
            "masks": torch.stack([torch.stack([self._mask(s.human_mask), self._mask(s.object_mask)]) for s in samples]),
            "background": torch.stack([self._image(b) for b in background]),  # (N, 3, R, R) in [0, 1]
            "has_background": torch.tensor([s.background is not None for s in samples]),
            "refs": refs.view(len(samples), 2, *refs.shape[1:]),  # (N, 2, 3, S, S): person, object
            "input_ids": self.token_ids([s.text for s in samples]),
        }


class SDImageTask:
    """choi-sd stage 2's data, conditions and loss for :func:`choi.training.loop.train`."""

    name = "sd-image"

    def __init__(self, cfg: SDImageTrainConfig, base: SDBase | None = None):
        for name in ("p_drop_text", "p_drop_human", "p_drop_object", "p_drop_background"):
            check_fraction(f"--{name.replace('_', '-')}", getattr(cfg, name))
        if cfg.layout not in LAYOUTS:
            raise ChoiError(f"--layout must be one of {', '.join(LAYOUTS)}, got {cfg.layout!r}")
        self.cfg = cfg
        self.base = base or SDBase(cfg.model, cfg.identity_encoder)
        from choi.pipelines.sd.loading import check_resolution

        check_resolution(cfg.resolution, self.base.multiple)
        if cfg.layout == "inpaint" and not self.base.inpainting:
            raise ChoiError(f"--layout inpaint needs an inpainting base (9-channel UNet); {self.base.base.name} has a "
                            "plain 4-channel UNet: use --layout controlnet")  # fmt: skip
        if cfg.lora_rank < 0:
            raise ChoiError(f"--lora-rank must be 0 (no LoRA) or positive, got {cfg.lora_rank}")
        if cfg.lora_rank:
            try:
                import peft  # noqa: F401
            except ImportError:
                raise ChoiError("--lora-rank needs peft: pip install 'choi[train]'") from None
        self.collate = SDCollate(cfg.resolution, self.base.tokenizer, self.base.processor)
        self.empty_ids = self.collate.token_ids([""])  # (1, L): the dropped prompt
        self.blank_pixels = self.collate.references([(np.zeros((1, 1, 3), np.uint8), np.zeros((1, 1), bool))])

    def build_model(self) -> SDAdapter:
        """A new adapter from the base and the IP-Adapter file, or the trained one ``--model`` has."""
        b, cfg = self.base, self.cfg
        if b.adapter is None:
            return SDAdapter.from_base(b.unet, b.ip_state, b.embed_dim, b.vae_factor, lora_rank=cfg.lora_rank,
                                       layout=cfg.layout, identity_encoder=b.identity_encoder)  # fmt: skip
        adapter = SDAdapter.from_pretrained(b.adapter, local_files_only=True)
        trained = adapter.config
        choices = {"--lora-rank": (cfg.lora_rank, trained.lora_rank), "--layout": (cfg.layout, trained.layout),
                   "--identity-encoder": (b.identity_encoder, trained.identity_encoder)}  # fmt: skip
        for flag, (asked, had) in choices.items():
            if asked != had:
                raise ChoiError(f"{flag} {asked}: the adapter in {cfg.model} was trained with {flag} {had}")
        if trained.image_embed_dim != b.embed_dim:
            raise ChoiError(f"--identity-encoder: {b.identity_path.name} embeds in {b.embed_dim} dimensions; the "
                            f"adapter in {cfg.model} was trained on {trained.image_embed_dim}")  # fmt: skip
        return adapter

    def place(self, model: SDAdapter, device: torch.device, dtype: torch.dtype) -> None:
        """Frozen parts to ``device`` in ``dtype``, then the adapter's processors into the UNet (they stay fp32)."""
        from choi.quiet import quiet_loading

        with quiet_loading():  # diffusers' notice about fp32-kept modules; SD 1.x's VAE and UNet have none
            for part in self.base.frozen():
                part.to(device, dtype)
        model.attach(self.base.unet)

    def config(self) -> dict[str, Any]:
        b = self.base
        return {"data": asdict(self.cfg), "base": str(b.base), "ip_adapter": str(b.ip_adapter),
                "image_encoder": str(b.image_encoder_path), "inpainting_unet": b.inpainting,
                "identity_encoder": b.identity_encoder, "identity_encoder_path": str(b.identity_path),
                "started_from": None if b.adapter is None else str(b.adapter)}  # fmt: skip

    def batches(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        cfg = self.cfg
        ds = ShardDataset(cfg.data, split="train", shuffle_buffer=cfg.shuffle_buffer, seed=cfg.seed)
        ds.set_epoch(epoch)  # each process reads its own part (ShardDataset splits by rank)
        yield from DataLoader(ds, batch_size=cfg.batch_size, collate_fn=self.collate, num_workers=cfg.num_workers,
                              generator=epoch_generator(cfg.seed, epoch))  # fmt: skip

    def conditions(self, batch: dict[str, torch.Tensor], drop: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Frozen encodings of a batch with the ``drop`` (N,) bool masks applied: what the adapter takes."""
        b, device = self.base, batch["image"].device
        dtype = b.unet.dtype
        n = batch["image"].shape[0]
        ids = torch.where(drop["text"][:, None], self.empty_ids.to(device), batch["input_ids"])
        roles = torch.stack([drop["human"], drop["object"]], 1)[:, :, None, None, None]
        refs = torch.where(roles, self.blank_pixels.to(device), batch["refs"])
        known_bg = (batch["has_background"].bool() & ~drop["background"]).float()[:, None, None, None]
        region = layout_region(batch["masks"])  # (N, 1, R, R): what is painted when a background is known
        region = known_bg * region + (1 - known_bg)
        out = {}
        if self.cfg.layout == "controlnet":
            out["control"] = layout_control(batch["masks"], region, batch["background"])  # (N, 6, R, R)
        with torch.no_grad():
            out["text"] = b.text_encoder(ids)[0]
            out["image_embeds"] = identity_embeds(b.image_encoder, refs.flatten(0, 1).to(dtype)).view(n, 2, -1)
            out["latents"] = b.vae.encode(batch["image"].to(dtype)).latent_dist.sample() * b.vae.config.scaling_factor
            if b.inpainting:  # the inpainting UNet's own channels: region mask and masked-image latents
                background = (batch["background"] * 2 - 1) * (1 - region)
                masked = b.vae.encode(background.to(dtype)).latent_dist.mode() * b.vae.config.scaling_factor
                mask = F.interpolate(region, size=masked.shape[-2:], mode="nearest")
                out["inpaint"] = torch.cat([mask.to(masked.dtype), masked], 1)
        return out

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        n, device = batch["image"].shape[0], batch["image"].device

        def coin(p: float) -> torch.Tensor:
            return torch.rand(n, device=device) < p

        drop = {"text": coin(cfg.p_drop_text), "human": coin(cfg.p_drop_human), "object": coin(cfg.p_drop_object),
                "background": coin(cfg.p_drop_background)}  # fmt: skip
        c = self.conditions(batch, drop)

        def predict(xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return model(xt, t, c["text"], c["image_embeds"], c.get("control"), batch["masks"], c.get("inpaint"))

        return diffusion_loss(self.base.noise, predict, c["latents"].float()), {}

    def validate(self, model: SDAdapter, out_dir: Path, step: int) -> dict[str, float]:
        """Held-out samples generated by the real stage 2 with their own masks: ``RUN/validation/step_*.png``
        and PSNR / MAE inside the masks (:func:`choi.training.sd_validation.validate_sd`)."""
        from choi.training.sd_validation import validate_sd

        return validate_sd(self, model, Path(out_dir), step)


def train_sd_image(
    data: str, out: str, model: str, resolution: int = 512, steps: int = 20000, batch_size: int = 4,
    lr: float = 1e-5, workers: int = 1, seed: int = 0, resume: bool = False, lora_rank: int = 0,
    validate_samples: int = 4, validate_steps: int = 20, layout: str = "controlnet",
    identity_encoder: str | None = None, **train_options: Any,
) -> Path:  # fmt: skip
    """Train choi-sd's stage 2 into ``out``; returns ``out/model`` (the adapter's EMA weights).

    ``validate_samples`` held-out samples are generated with ``validate_steps`` steps every
    ``validate_every`` steps and at the end (0 samples: no validation). ``train_options``:
    :class:`~choi.training.loop.TrainConfig` fields (validate_every, grad_accum,
    gradient_checkpointing, mixed_precision, ...).
    """
    if workers < 0:
        raise ChoiError("--workers must be non-negative")
    from choi.training.sd_validation import check_validation

    check_validation(train_options.get("validate_every", 0), validate_samples, validate_steps)
    ShardDataset(data, split="train")  # fail early, with the reader's message, on a bad dataset
    cfg = SDImageTrainConfig(data=data, model=model, resolution=resolution, batch_size=batch_size,
                             num_workers=workers, seed=seed, lora_rank=lora_rank, val_samples=validate_samples,
                             val_steps=validate_steps, layout=layout, identity_encoder=identity_encoder)  # fmt: skip
    task = SDImageTask(cfg)
    final = train_recipe(task, out, steps, batch_size, lr, seed, resume, **train_options)
    if PartialState().is_main_process:
        write_model_index(final, task)
    return final


def write_model_index(folder: Path, task: SDImageTask) -> Path:
    """``RUN/model/model_index.json``: the choi-sd model folder the run trained, with the adapter beside it,
    so ``choi generate --model RUN/model`` and ``choi eval --model RUN/model`` run the trained stage 2.

    It refers to the same base, IP-Adapter, image encoder and stage 1 (never copies them), and to the
    DINOv2 folder when the adapter was trained on one; the adapter's own config says which layout
    branch and identity encoder it has. The IP-Adapter scales default to 1, the scale it was trained at.
    """
    source = Path(task.cfg.model)
    index = json.loads((source / "model_index.json").read_text(encoding="utf-8"))
    stage1 = index.get("components", {}).get("stage1", "choi-tiny")
    b = task.base
    stage1 = stage1 if stage1 == "choi-tiny" else str((source / stage1).resolve())
    parts = {"base": b.base, "ip_adapter": b.ip_adapter, "image_encoder": b.image_encoder_path, "stage1": stage1}
    if b.identity_encoder == "dinov2":
        parts["identity_encoder"] = b.identity_path
    index["components"] = {**{k: str(v) for k, v in parts.items()}, "adapter": "."}
    index["resolution"] = task.cfg.resolution
    index["options"] = {**index.get("options", {}), "ip_scale_human": 1.0, "ip_scale_object": 1.0}
    atomic_write_bytes(folder / "model_index.json", (json.dumps(index, indent=2) + "\n").encode())
    return folder
