"""Training recipes (tasks for :func:`choi.training.loop.train`) for the three evaluators.

- ``interaction``: image → class (cross-entropy, flips + blur/noise so generated images are judged fairly)
- ``mask``: human/object masks → class
- ``identity``: scene → human/object embeddings matched to the reference embeddings (InfoNCE);
  the locator that places each role's glimpse is supervised by the masks during training only.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from choi.data.batch import collate
from choi.data.shards import ShardDataset, read_manifest
from choi.errors import ChoiError
from choi.launch import process_count
from choi.models.evaluators import IdentityEmbedder, InteractionRecognizer
from choi.training.loop import TrainConfig, epoch_generator, train
from choi.vocabulary import CLASSES, OBJECT_CATEGORIES
from choi.world import class_probabilities
from choi.world.objects import OBJECT_FACTOR_CLASSES, object_factor_labels

EVALUATOR_KINDS = ("interaction", "mask", "identity")


@dataclass
class EvaluatorDataConfig:
    data: str  # dataset folder with a train split (and a test split for validation)
    shuffle_buffer: int = 2000
    num_workers: int = 1
    batch_size: int = 64
    val_samples: int = 512
    seed: int = 0
    object_memory: int = 4096  # reference-object embeddings kept from earlier batches as negatives (0: none)


def _loader(cfg: EvaluatorDataConfig, split: str, epoch: int, shuffle: bool, limit: int | None = None):
    """Batches of ``split``; with ``limit``, only the first ``limit`` samples (rounded up to a batch)."""
    ds = ShardDataset(cfg.data, split=split, shuffle_buffer=cfg.shuffle_buffer if shuffle else 0, seed=cfg.seed)
    ds.set_epoch(epoch)
    loader = DataLoader(ds, batch_size=cfg.batch_size, collate_fn=collate, num_workers=cfg.num_workers,
                        generator=epoch_generator(cfg.seed, epoch))  # fmt: skip
    return loader if limit is None else itertools.islice(loader, math.ceil(limit / cfg.batch_size))


def _degrade(x: torch.Tensor) -> torch.Tensor:
    """Blur half the batch and add noise: generated images are softer and noisier than renders."""
    n = x.shape[0]
    sigma = 0.3 + float(torch.rand(())) * 0.9  # one strength per batch: a single vectorised blur
    blurred = torch.where(torch.rand(n, 1, 1, 1, device=x.device) < 0.5, _blur(x, sigma), x)
    noise = torch.randn_like(x) * (torch.rand(n, 1, 1, 1, device=x.device) * 0.04)
    return (blurred + noise).clamp(0, 1)


def _dice_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 − soft Dice per sample and role, over the roles present: unlike per-pixel BCE, a
    40-pixel object weighs as much as a 4000-pixel person."""
    inter = (pred * target).sum((-2, -1))
    total = pred.sum((-2, -1)) + target.sum((-2, -1))
    present = target.sum((-2, -1)) > 0
    dice = 1 - (2 * inter + 1e-3) / (total + 1e-3)
    return dice[present].mean() if present.any() else dice.sum() * 0


def _lower_resolution(x: torch.Tensor, size: int) -> torch.Tensor:
    """Down to ``size`` px and back: the detail a smaller rendering of the same thing would lose."""
    if size >= x.shape[-1]:
        return x
    small = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    return F.interpolate(small, size=x.shape[-2:], mode="bilinear").clamp(0, 1)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, round(2 * sigma))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(
        F.pad(x, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c
    )


def _flip(batch: dict[str, torch.Tensor], keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Mirror a random half of the batch: every interaction exists facing left and right."""
    flip = torch.rand(batch[keys[0]].shape[0], device=batch[keys[0]].device) < 0.5
    out = dict(batch)
    for k in keys:
        out[k] = torch.where(flip.view(-1, 1, 1, 1), batch[k].flip(-1), batch[k])
    return out


class _EvaluatorTask:
    """Shared data plumbing; subclasses define the model and the loss."""

    kind = ""
    new_parts: tuple[str, ...] = ()  # tensor-name prefixes a fine-tuned model may add to its starting one

    def __init__(self, data: EvaluatorDataConfig, init_from: str | None = None):
        self.data = data
        self.init_from = init_from  # a folder of trained evaluators (<kind>/config.json): fine-tune from it
        self.name = f"evaluator-{self.kind}"
        self.has_test = "test" in read_manifest(data.data).splits  # validation needs unseen identities

    def build_model(self):
        model = self.new_model()
        if self.init_from:
            source = Path(self.init_from) / self.kind
            try:
                other = type(model).from_pretrained(source)
            except (OSError, ValueError, TypeError):
                raise ChoiError(f"--init-from: no trained {self.kind} evaluator in {source}") from None
            try:
                missing, unexpected = model.load_state_dict(other.state_dict(), strict=False)
            except RuntimeError:  # a tensor of another shape
                missing, unexpected = [], ["(shapes differ)"]
            if unexpected or any(not k.startswith(self.new_parts) for k in missing):
                raise ChoiError(f"--init-from: {source} is not an evaluator of this shape ({self.kind})")
        return model

    def new_model(self):
        raise NotImplementedError

    def batches(self, epoch: int):
        return _loader(self.data, "train", epoch, shuffle=True)

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "init_from": self.init_from, **asdict(self.data)}

    def validate(self, model, out_dir: Path, step: int) -> dict[str, float]:
        return {}


class RecognizerTask(_EvaluatorTask):
    """Interaction recognizer on images (``kind="interaction"``) or on masks (``kind="mask"``)."""

    def __init__(self, data: EvaluatorDataConfig, kind: str = "interaction", init_from: str | None = None):
        self.kind = kind
        super().__init__(data, init_from)
        self.input_key = "image" if kind == "interaction" else "masks"
        # Rare classes are ~10x scarcer in HOI-World's train split; a judge must not inherit that
        # prior, so the loss weighs each class by its inverse training frequency.
        freq = torch.from_numpy(class_probabilities("train")).float()
        self.class_weights = (1.0 / freq) / (1.0 / freq).mean()

    def new_model(self) -> InteractionRecognizer:
        return InteractionRecognizer(in_channels=3 if self.kind == "interaction" else 2, num_classes=len(CLASSES))

    def loss(self, model, batch):
        batch = _flip(batch, (self.input_key,))
        x = batch[self.input_key]
        if self.kind == "interaction":
            x = _degrade(x)
        logits = model(x)
        weight = self.class_weights.to(logits.device)
        loss = F.cross_entropy(logits, batch["label"], weight=weight, label_smoothing=0.05)
        acc = (logits.argmax(-1) == batch["label"]).float().mean()
        return loss, {"acc": acc.item()}

    def validate(self, model, out_dir: Path, step: int) -> dict[str, float]:
        if not self.has_test:
            return {}
        correct = total = 0
        device = next(model.parameters()).device
        for batch in _loader(self.data, "test", 0, shuffle=False, limit=self.data.val_samples):
            logits = model(batch[self.input_key].to(device))
            correct += int((logits.argmax(-1).cpu() == batch["label"]).sum())
            total += len(batch["label"])
        return {"test_acc": correct / max(total, 1)}


def info_nce(
    query: torch.Tensor,
    key: torch.Tensor,
    ids: torch.Tensor,
    temperature: float = 0.07,
    memory: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE where every pair with the same identity id counts as a positive.

    ``memory``: (keys (M, D), ids (M,)) from earlier batches, extra candidates for each query.
    """
    n = len(key)
    keys, key_ids = (key, ids) if memory is None else (torch.cat([key, memory[0]]), torch.cat([ids, memory[1]]))
    logits = query @ keys.T / temperature  # (N, N + M)
    positive = (ids[:, None] == key_ids[None, :]).float()

    def one_side(lg: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        log_prob = lg.log_softmax(-1)
        return -((log_prob * pos).sum(-1) / pos.sum(-1)).mean()

    return 0.5 * (one_side(logits, positive) + one_side(logits[:, :n].T, positive[:, :n].T))


class EmbeddingMemory:
    """The last ``size`` key embeddings (detached) and their ids: a cross-batch memory.

    Within a batch of 32, two objects that differ only in a pattern or an accent colour rarely
    meet; against a few thousand earlier references they do. Fine-tuning moves the embedding
    slowly, so entries a hundred steps old are still fair negatives. Not checkpointed: after a
    resume it refills within ``size / batch`` steps.
    """

    def __init__(self, size: int):
        self.size = size
        self.keys: torch.Tensor | None = None
        self.ids: torch.Tensor | None = None

    def get(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        return None if self.keys is None else (self.keys, self.ids)

    def push(self, keys: torch.Tensor, ids: torch.Tensor) -> None:
        if self.size <= 0:
            return
        keys, ids = keys.detach(), ids.detach()
        if self.keys is not None:
            keys, ids = torch.cat([keys, self.keys]), torch.cat([ids, self.ids])
        self.keys, self.ids = keys[: self.size], ids[: self.size]


def object_factor_targets(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(N, F) labels of each object's visible factors (:data:`OBJECT_FACTOR_CLASSES`); -1 where the
    sample has no HOI-World object identity."""
    rows = [
        object_factor_labels(OBJECT_CATEGORIES[c], i) if c >= 0 and i >= 0 else (-1,) * len(OBJECT_FACTOR_CLASSES)
        for c, i in zip(batch["object_category"].tolist(), batch["object_id"].tolist(), strict=True)
    ]
    return torch.tensor(rows, dtype=torch.long)


class IdentityTask(_EvaluatorTask):
    kind = "identity"
    new_parts = ("object_factors.",)

    def __init__(self, data: EvaluatorDataConfig, init_from: str | None = None):
        super().__init__(data, init_from)
        self.memory = EmbeddingMemory(data.object_memory)

    def new_model(self) -> IdentityEmbedder:
        # The colour histogram has no weights; its bins and weight were chosen on held-out test
        # requests (positions 1000-2023 of choi eval's order), not on the ones reports score.
        return IdentityEmbedder(
            object_factor_classes=tuple(OBJECT_FACTOR_CLASSES.values()), colour_bins=16, colour_weight=0.75
        )

    @staticmethod
    def factor_loss(model: IdentityEmbedder, embedding: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the object factor probe over the factors. InfoNCE within a batch of
        32 rarely meets two objects that differ only in a pattern or an accent colour; the factors
        name those differences for every sample."""
        logits = model.object_factor_logits(embedding)
        targets = targets.to(embedding.device)
        # -1: a factor this object never shows (or not a HOI-World object); a factor no sample of
        # the batch shows adds nothing (cross-entropy over no targets is NaN).
        pairs = [(lg, t) for lg, t in zip(logits, targets.T, strict=True) if (t >= 0).any()]
        losses = [F.cross_entropy(lg, t, ignore_index=-1) for lg, t in pairs]
        return sum(losses) / len(logits) if losses else embedding.sum() * 0

    def loss(self, model, batch):
        batch = _flip(_flip(batch, ("image", "masks")), ("human_ref", "object_ref", "ref_masks"))
        scene = _degrade(batch["image"])
        # References are sharp and large; scene people and objects are small. Seen through a
        # lower resolution, a reference teaches the embedding to ignore detail a scene lacks.
        low = int(128 * (0.25 + 0.75 * float(torch.rand(()))))
        human_ref, object_ref = (_lower_resolution(batch[k], low) for k in ("human_ref", "object_ref"))
        refs = batch["ref_masks"]
        views = {
            "scene": (scene, batch["masks"], ("human", "object")),
            "human_ref": (human_ref, torch.stack([refs[:, 0], torch.zeros_like(refs[:, 0])], 1), ("human",)),
            "object_ref": (object_ref, torch.stack([torch.zeros_like(refs[:, 1]), refs[:, 1]], 1), ("object",)),
        }
        emb, seg = {}, 0.0
        for name, (x, masks, roles) in views.items():
            logits = model.locate(x)
            target = F.adaptive_avg_pool2d(masks, logits.shape[-2:])
            seg = seg + F.binary_cross_entropy_with_logits(logits, target) + _dice_loss(logits.sigmoid(), target)
            # Glimpses from true masks for half the samples, from the locator for the rest: the
            # encoders learn from clean crops and from the crops scoring will give them.
            use_true = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < 0.5
            emb[name] = model.embed(x, torch.where(use_true, target, logits.sigmoid()), roles)
        loss_h = info_nce(emb["scene"]["human"], emb["human_ref"]["human"], batch["human_id"])
        ref_o = emb["object_ref"]["object"]
        # Objects by look: two that differ only in what is never drawn are not negatives.
        loss_o = info_nce(emb["scene"]["object"], ref_o, batch["object_look"], memory=self.memory.get())
        self.memory.push(ref_o, batch["object_look"])
        factors = object_factor_targets(batch)
        loss_f = 0.5 * sum(self.factor_loss(model, emb[v]["object"], factors) for v in ("scene", "object_ref"))
        loss = loss_h + loss_o + loss_f + seg
        logs = {"nce_human": loss_h.item(), "nce_object": loss_o.item(), "factors": float(loss_f.detach())}
        return loss, {**logs, "segment": float(seg.detach())}

    def validate(self, model, out_dir: Path, step: int) -> dict[str, float]:
        from choi.evaluation.evaluators import identity_retrieval

        if not self.has_test:
            return {}
        device = next(model.parameters()).device
        return identity_retrieval(
            model, _loader(self.data, "test", 0, shuffle=False, limit=self.data.val_samples), device
        )


def make_task(kind: str, data: EvaluatorDataConfig, init_from: str | None = None):
    if kind == "identity":
        return IdentityTask(data, init_from)
    if kind in ("interaction", "mask"):
        return RecognizerTask(data, kind, init_from)
    raise ValueError(f"unknown evaluator kind {kind!r}; choose from {EVALUATOR_KINDS}")


def train_evaluators(
    data: str,
    out: str,
    kinds: tuple[str, ...] = EVALUATOR_KINDS,
    steps: int = 3000,
    batch_size: int = 64,
    lr: float = 1e-3,
    workers: int = 1,
    seed: int = 0,
    resume: bool = False,
    init_from: str | None = None,
) -> dict[str, Path]:
    """Train each evaluator in ``kinds`` into ``out/<kind>``; returns the final model folders.

    ``init_from``: a folder of trained evaluators (``<kind>/config.json`` each, like the shipped
    ones) to fine-tune from, with a fresh schedule.
    """
    bad = [k for k in kinds if k not in EVALUATOR_KINDS]
    if bad or not kinds:
        raise ChoiError(
            f"unknown evaluator kind(s) {', '.join(bad) or '(none)'}; choose from {', '.join(EVALUATOR_KINDS)}"
        )
    if steps <= 0 or batch_size <= 0 or workers < 0:
        raise ChoiError("--steps and --batch-size must be positive and --workers non-negative")
    if "identity" in kinds and process_count() > 1:
        # its loss calls the embedder's locate/embed/probe directly, around DistributedDataParallel's
        # forward (whose gradient sync would not run), and its cross-batch memory is per process
        raise ChoiError("the identity evaluator trains in one process: run it without torchrun/accelerate "
                        "launch, or give --kinds interaction,mask")  # fmt: skip
    ShardDataset(data, split="train")  # fail early, with the reader's message, on a bad dataset
    absent = [k for k in kinds if init_from and not (Path(init_from) / k / "config.json").exists()]
    if absent:
        raise ChoiError(f"--init-from: no trained {', '.join(absent)} evaluator(s) in {init_from}")
    results = {}
    for kind in kinds:
        data_cfg = EvaluatorDataConfig(data=data, batch_size=batch_size, num_workers=workers, seed=seed)
        cfg = TrainConfig(
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            checkpoint_every=max(100, steps // 10),
            log_every=max(10, steps // 100),
            validate_every=max(100, steps // 5),
        )
        results[kind] = train(make_task(kind, data_cfg, init_from), cfg, Path(out) / kind, resume=resume)
    return results
