"""The trained evaluator suite: load the shipped (or user-trained) evaluators and score images.

Scoring uses only what a generated image shows (and, for box metrics, the request's box): no
ground-truth masks or boxes of the target ever enter a score.

Example:
    >>> suite = EvaluatorSuite.load()            # the weights shipped with choi
    >>> probs = suite.classify_images(images)    # (N, num_classes)
    >>> emb = suite.embed(images)                # {"human": (N, D), "object": (N, D)}
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from choi.data.batch import image_tensor, mask_tensor
from choi.errors import ChoiError
from choi.evaluation.metrics import retrieval_top1
from choi.models.evaluators import IdentityEmbedder, InteractionRecognizer


def default_evaluators_path() -> Path:
    """The evaluator weights that ship inside the package."""
    return Path(str(resources.files("choi") / "weights" / "evaluators"))


@torch.no_grad()
def _batched(fn, x: torch.Tensor, batch_size: int = 64) -> list:
    return [fn(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]


@dataclass
class EvaluatorSuite:
    interaction: InteractionRecognizer
    mask: InteractionRecognizer
    identity: IdentityEmbedder
    device: torch.device
    path: Path

    @classmethod
    def load(cls, path: str | Path | None = None, device: str = "cpu") -> EvaluatorSuite:
        root = Path(path) if path is not None else default_evaluators_path()
        missing = [k for k in ("interaction", "mask", "identity") if not (root / k / "config.json").exists()]
        if missing:
            raise ChoiError(
                f"no trained evaluators in {root} (missing: {', '.join(missing)}); "
                "train them with `choi train evaluators`"
            )
        dev = torch.device(device)
        kinds = {"interaction": InteractionRecognizer, "mask": InteractionRecognizer, "identity": IdentityEmbedder}
        models = {}
        for kind, model_class in kinds.items():
            try:
                models[kind] = model_class.from_pretrained(root / kind)
            except (OSError, ValueError, TypeError, RuntimeError) as err:  # a broken config or weights
                raise ChoiError(f"cannot load the {kind} evaluator from {root / kind}: {err}") from None
        for m in models.values():
            m.to(dev).eval()
        return cls(**models, device=dev, path=root)

    def _run(self, fn, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(_batched(lambda b: fn(b.to(self.device)).float().cpu(), x))

    def classify_images(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 → class probabilities (N, C)."""
        return self._run(lambda b: self.interaction(b).softmax(-1), image_tensor(images)).numpy()

    def classify_masks(self, human: np.ndarray, obj: np.ndarray) -> np.ndarray:
        """(N, H, W) bool human and object masks → class probabilities (N, C)."""
        return self._run(lambda b: self.mask(b).softmax(-1), mask_tensor(human, obj)).numpy()

    def features(self, images: np.ndarray) -> np.ndarray:
        """Recognizer features (N, D): the feature space of FID/KID on HOI-World."""
        return self._run(self.interaction.features, image_tensor(images)).numpy()

    def embed(self, images: np.ndarray, roles: tuple[str, ...] = ("human", "object")) -> dict[str, np.ndarray]:
        """Unit identity embeddings of ``roles`` (a reference needs only its own), each (N, D)."""
        x = image_tensor(images)
        parts = _batched(lambda b: self.identity(b.to(self.device), roles=roles), x)
        return {role: torch.cat([p[role].float().cpu() for p in parts]).numpy() for role in roles}


@torch.no_grad()
def identity_retrieval(model: IdentityEmbedder, batches: Iterable[dict[str, torch.Tensor]], device) -> dict[str, float]:
    """Retrieval top-1 of scene embeddings among the references of the identities in ``batches``."""
    acc: dict[str, list] = {k: [] for k in ("sh", "so", "rh", "ro", "hid", "oid")}
    for b in batches:
        scene = model(b["image"].to(device))
        acc["sh"].append(scene["human"].cpu())
        acc["so"].append(scene["object"].cpu())
        acc["rh"].append(model(b["human_ref"].to(device), roles=("human",))["human"].cpu())
        acc["ro"].append(model(b["object_ref"].to(device), roles=("object",))["object"].cpu())
        acc["hid"].append(b["human_id"])
        acc["oid"].append(b["object_look"])
    cat = {k: torch.cat(v).numpy() for k, v in acc.items()}
    return {
        "human_top1": retrieval_top1(cat["sh"], cat["hid"], cat["rh"], cat["hid"]),
        "object_top1": retrieval_top1(cat["so"], cat["oid"], cat["ro"], cat["oid"]),
    }
