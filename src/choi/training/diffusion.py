"""What both diffusion recipes (stage 1 masks, stage 2 images) share: the task's data, start and
class weights (:class:`DiffusionTask`), the entry point (:func:`train_stage`), noise, loss, text, flips.

Example:
    >>> noise = noise_scheduler(model.config)
    >>> loss = diffusion_loss(noise, lambda xt, t: model(xt, t, cond), x0)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from diffusers import DDPMScheduler
from torch.utils.data import DataLoader

from choi.data.schema import Sample
from choi.data.shards import ShardDataset, interaction_counts, iter_samples, read_manifest
from choi.errors import ChoiError
from choi.io import atomic_write_bytes, png_bytes
from choi.models.denoiser import ConditionalDenoiser
from choi.models.text_encoder import TextEmbeddings, TextEncoder, text_encoder_for
from choi.training.loop import epoch_generator, train_recipe
from choi.vocabulary import BY_NAME, CLASSES

log = logging.getLogger(__name__)

M = TypeVar("M")


@dataclass
class StageTrainConfig:
    """The data options both diffusion recipes share; each recipe's config adds its own."""

    data: str  # dataset folder with a train split (and a test split for validation)
    model: str = "tiny"  # preset name of the recipe's model
    init_from: str | None = None  # a model folder to start from (fine-tuning); None: random
    batch_size: int = 32
    num_workers: int = 1
    shuffle_buffer: int = 1000
    seed: int = 0
    # Loss weight ∝ class count^-class_balance: 0 plain, 1 every class weighs the same (rare ones 10x).
    class_balance: float = 0.0
    flip: bool = True  # every interaction exists facing left and right
    val_samples: int = 8


class DiffusionTask:
    """The parts of a diffusion recipe's :class:`~choi.training.loop.Task` that do not depend on what
    it generates: the model's resolved config, the starting weights, the batches (with text
    embeddings) and class weights.

    A recipe sets ``name``, ``model_cls`` (a :class:`~choi.models.denoiser.ConditionalDenoiser`) and
    ``config_cls``, writes ``collate_fn``, ``loss`` and ``validate``, and may override
    ``model_overrides``.
    """

    name: ClassVar[str]
    model_cls: ClassVar[type[ConditionalDenoiser]]
    config_cls: ClassVar[type[StageTrainConfig]]

    def __init__(self, cfg: StageTrainConfig, text_encoder: TextEncoder | None = None):
        self.cfg = cfg
        # Every argument of the model's __init__: the preset's, with the recipe's changes.
        self.model_config = self.model_cls.preset_config(cfg.model, **self.model_overrides())
        self.val_split = validation_split(cfg.data)
        self.text_encoder = text_encoder or self.load_text_encoder()
        self.noise = noise_scheduler(self.model_config)
        self.class_weights = None
        if cfg.class_balance:
            self.class_weights = class_weights(interaction_counts(cfg.data, "train"), cfg.class_balance)
        self._val: list[Sample] | None = None

    def model_overrides(self) -> dict[str, Any]:
        """Model parameters the recipe's options change on top of the preset (none by default)."""
        return {}

    def load_text_encoder(self) -> TextEncoder:
        """The frozen text encoder the model's config names (MiniLM unless a recipe says otherwise)."""
        return text_encoder_for(self.model_config)

    def build_model(self) -> torch.nn.Module:
        model = self.model_cls(**self.model_config)
        if self.cfg.init_from:
            self.start_from(model, pretrained(self.model_cls, self.cfg.init_from, self.name))
            log.info("started from %s", self.cfg.init_from)
        return model

    def start_from(self, model: torch.nn.Module, other: torch.nn.Module) -> None:
        """Copy ``other``'s weights into ``model``; the same preset is required unless a recipe says otherwise."""
        try:
            model.load_state_dict(other.state_dict())
        except RuntimeError:
            cfg = self.cfg
            raise ChoiError(f"--init-from: {cfg.init_from} is not a '{cfg.model}' {self.name} model") from None

    def config(self) -> dict[str, Any]:
        return {"data": asdict(self.cfg), "model": self.model_config, "text_encoder": self.text_encoder.name}

    def collate_fn(self) -> Callable[[Sequence[Sample]], dict[str, Any]]:
        """Samples → the recipe's batch, with ``texts`` (phrasings per sample) and ``label``."""
        raise NotImplementedError

    def batches(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        cfg = self.cfg
        ds = ShardDataset(cfg.data, split="train", shuffle_buffer=cfg.shuffle_buffer, seed=cfg.seed)
        ds.set_epoch(epoch)
        loader = DataLoader(ds, batch_size=cfg.batch_size, collate_fn=self.collate_fn(), num_workers=cfg.num_workers,
                            generator=epoch_generator(cfg.seed, epoch))  # fmt: skip
        rng = np.random.default_rng([cfg.seed, epoch])  # text choice: same batches on a resumed run
        yield from with_text(loader, self.text_encoder, rng)

    def loss_weights(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """A batch's class-balance loss weights (N, 1, 1, 1), or None when every sample weighs alike."""
        return None if self.class_weights is None else sample_weights(batch["label"], self.class_weights)

    def _val_samples(self) -> list[Sample]:
        if self._val is None:
            self._val = list(iter_samples(self.cfg.data, split=self.val_split, limit=self.cfg.val_samples))
        return self._val

    @staticmethod
    def _write_grid(out_dir: Path, step: int, rows: list[np.ndarray]) -> None:
        """``OUT/validation/step_NNNNNNN.png``: rows of equal width, separated by a 2 px grey line."""
        sep = np.full((2, rows[0].shape[1], 3), 128, np.uint8)
        grid = np.concatenate([part for row in rows for part in (row, sep)][:-1], 0)
        folder = Path(out_dir) / "validation"
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(folder / f"step_{step:07d}.png", png_bytes(grid))


def train_stage(
    task_cls: type[DiffusionTask],
    data: str,
    out: str,
    *,
    config: str,
    steps: int,
    batch_size: int,
    lr: float,
    workers: int = 1,
    seed: int = 0,
    resume: bool = False,
    validate_every: int = 0,
    class_balance: float = 0.0,
    init_from: str | None = None,
    text_encoder: TextEncoder | None = None,
    recipe: dict[str, Any] | None = None,
) -> Path:
    """Train a diffusion recipe into ``out``; returns ``out/model`` (the EMA weights its pipeline loads).

    ``recipe``: fields of the recipe's own config (``task_cls.config_cls``) to set.
    """
    if workers < 0:
        raise ChoiError("--workers must be non-negative")
    check_fraction("--class-balance", class_balance)
    ShardDataset(data, split="train")  # fail early, with the reader's message, on a bad dataset
    cfg = task_cls.config_cls(
        data=data,
        model=config,
        init_from=init_from,
        batch_size=batch_size,
        num_workers=workers,
        seed=seed,
        class_balance=class_balance,
        **(recipe or {}),
    )
    return train_recipe(task_cls(cfg, text_encoder), out, steps, batch_size, lr, seed, resume, validate_every)


def validation_split(data: str | Path) -> str:
    """The split a recipe validates on: ``test``, whose identities training never saw, else ``train``."""
    return "test" if "test" in read_manifest(data).splits else "train"


def check_fraction(option: str, value: float) -> float:
    """``value`` if it lies in [0, 1], else a one-line ChoiError naming ``option`` (NaN too)."""
    if not 0 <= value <= 1:
        raise ChoiError(f"{option} must be between 0 and 1, got {value:g}")
    return value


def pretrained(model_cls: type[M], folder: str | Path, kind: str) -> M:
    """The ``kind`` model saved in ``folder`` (``--init-from``), or a one-line error."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ChoiError(f"--init-from: no {kind} model in {folder} (expected e.g. RUN/model)")
    return model_cls.from_pretrained(folder)


def noise_scheduler(model_config: Mapping[str, Any]) -> DDPMScheduler:
    """The training noise schedule of a model config (``num_train_timesteps``, ``beta_schedule``...)."""
    return DDPMScheduler(
        num_train_timesteps=model_config["num_train_timesteps"],
        beta_schedule=model_config["beta_schedule"],
        prediction_type=model_config["prediction_type"],
    )


def diffusion_loss(
    noise: DDPMScheduler,
    predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted MSE between ``predict(x_t, t)`` and the schedule's target (velocity or noise) at random t."""
    eps = torch.randn_like(x0)
    t = torch.randint(0, noise.config.num_train_timesteps, (x0.shape[0],), device=x0.device)
    xt = noise.add_noise(x0, eps, t)
    kind = noise.config.prediction_type
    target = {"v_prediction": lambda: noise.get_velocity(x0, eps, t), "sample": lambda: x0}.get(kind, lambda: eps)()
    err = (predict(xt, t).float() - target.float()) ** 2
    if weight is None:
        return err.mean()
    weight = weight.expand_as(err)
    return (err * weight).sum() / weight.sum()


def class_weights(counts: Mapping[str, int], balance: float) -> torch.Tensor:
    """Per-class loss weights ∝ count^-balance, indexed by class index, averaging 1 over the labelled
    training samples.

    ``balance`` 0 weighs every sample alike; 1 gives every class the same total weight, so a rare
    class drawn 10x less often counts 10x more per sample. Classes absent from ``counts`` weigh 1.
    """
    if not 0 <= balance <= 1:
        raise ValueError(f"class balance must be in [0, 1], got {balance}")
    n = torch.tensor([float(counts.get(c.name, 0)) for c in CLASSES])
    weights = torch.ones(len(CLASSES))
    seen = n > 0
    if seen.any():
        raw = n[seen] ** -balance
        weights[seen] = raw * n[seen].sum() / (raw * n[seen]).sum()
    return weights


def sample_weights(labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(N,) class labels → (N, 1, 1, 1) loss weights; unlabelled samples (label < 0) weigh 1."""
    known = labels >= 0
    w = torch.where(known, weights.to(labels.device)[labels.clamp(min=0)], torch.ones_like(labels, dtype=weights.dtype))
    return w.view(-1, 1, 1, 1)


def text_variants(sample: Sample) -> list[str]:
    """Phrasings of the sample's interaction: the model should not depend on one template."""
    cls = BY_NAME.get(sample.interaction)
    if cls is None:  # real data whose verb choi has no class for: its own text only
        return [sample.text]
    return list(dict.fromkeys([sample.text, cls.phrase(sample.object_category), cls.text]))


def with_text(
    loader: Iterable[dict[str, Any]], text_encoder: TextEncoder, rng: np.random.Generator
) -> Iterable[dict[str, Any]]:
    """Replace each batch's ``texts`` (phrasings per sample) by the embeddings of one chosen phrasing."""
    for batch in loader:
        texts = [variants[int(rng.integers(len(variants)))] for variants in batch.pop("texts")]
        emb = text_encoder(texts)  # cached per text: MiniLM runs once per phrasing
        yield {**batch, "text_tokens": emb.tokens, "text_mask": emb.mask, "text_pooled": emb.pooled}


def batch_text(batch: dict[str, torch.Tensor]) -> TextEmbeddings:
    return TextEmbeddings(batch["text_tokens"], batch["text_mask"], batch["text_pooled"])


def flip_halves(
    batch: dict[str, torch.Tensor], target_keys: Sequence[str], ref_keys: Sequence[str], box_key: str = "union_box"
) -> dict[str, torch.Tensor]:
    """Mirror a random half of the targets (``target_keys`` and the box) and, independently, of the references.

    Every interaction exists facing left and right, and a reference may face either way.
    """
    some = batch[target_keys[0]]
    n, device = some.shape[0], some.device
    out = dict(batch)

    def coin() -> torch.Tensor:
        return torch.rand(n, device=device) < 0.5

    flip = coin()
    for key in target_keys:
        out[key] = torch.where(flip.view(-1, *[1] * (batch[key].dim() - 1)), batch[key].flip(-1), batch[key])
    box = batch[box_key]
    mirrored = torch.stack([1 - box[:, 2], box[:, 1], 1 - box[:, 0], box[:, 3]], 1)
    out[box_key] = torch.where(flip.view(-1, 1), mirrored, box)
    flip_refs = coin()
    for key in ref_keys:
        out[key] = torch.where(flip_refs.view(-1, *[1] * (batch[key].dim() - 1)), batch[key].flip(-1), batch[key])
    return out
