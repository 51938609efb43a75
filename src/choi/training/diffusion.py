"""What both diffusion recipes (stage 1 masks, stage 2 images) share: noise, loss, text, flips.

Example:
    >>> noise = noise_scheduler(model.config)
    >>> loss = diffusion_loss(noise, model.config.prediction_type, lambda xt, t: model(xt, t, cond), x0)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from diffusers import DDPMScheduler

from choi.data.schema import Sample
from choi.models.text_encoder import TextEmbeddings, TextEncoder
from choi.vocabulary import BY_NAME


def noise_scheduler(model_config: Any) -> DDPMScheduler:
    """The training noise schedule of a model config (``num_train_timesteps``, ``beta_schedule``...)."""
    return DDPMScheduler(
        num_train_timesteps=model_config.num_train_timesteps,
        beta_schedule=model_config.beta_schedule,
        prediction_type=model_config.prediction_type,
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
