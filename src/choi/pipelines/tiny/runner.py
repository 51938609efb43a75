"""What choi-tiny's two stage pipelines share: a model with its frozen text encoder, loaded from a folder."""

from __future__ import annotations

import contextlib
import hashlib
import os
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from choi.errors import ChoiError
from choi.models.text_encoder import TextEncoder, text_encoder_for
from choi.quiet import quiet_loading


def shipped_weights() -> Path:
    """choi-tiny's folder inside the package: ``model_index.json``, ``mask/`` (stage 1) and ``image/`` (stage 2)."""
    return Path(str(resources.files("choi") / "weights"))


def weights_digest(folder: Path) -> str:
    files = sorted(folder.glob("*.safetensors"))
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.read_bytes())
    return digest.hexdigest()[:16] if files else "unknown"


class ModelRunner:
    """A choi-tiny model (``model_class``) in eval mode with the text encoder it was trained with
    (:func:`~choi.models.text_encoder.text_encoder_for`; ``sd_base``: the SD folder whose CLIP text
    encoder a choi-sd stage-1 model reads)."""

    model_class: Any = None  # MaskGenerator or ImageGenerator
    what = "model"  # "mask" or "image": the name in messages and in `choi train <what>`

    def __init__(self, model: Any, text_encoder: TextEncoder | None = None, model_id: str = "unsaved",
                 model_version: str = "unsaved", sd_base: str | os.PathLike | None = None):  # fmt: skip
        self.text_encoder = text_encoder or text_encoder_for(model.config, sd_base)
        if self.text_encoder.name != model.config.text_encoder:
            wanted, given = model.config.text_encoder, self.text_encoder.name
            raise ChoiError(f"the {self.what} model expects text encoder '{wanted}', not '{given}'")
        self.model = model.eval()
        if self.text_encoder.max_length != model.config.max_text_tokens:
            raise ChoiError(f"text encoder max_length does not match the {self.what} model's max_text_tokens")
        self.model_id, self.model_version = model_id, model_version

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike | None = None, torch_dtype: torch.dtype = torch.float32,
        text_encoder: TextEncoder | None = None, sd_base: str | os.PathLike | None = None,
    ) -> Any:  # fmt: skip
        """Load a saved model folder (default: the shipped choi-tiny's)."""
        folder = Path(path) if path is not None else shipped_weights() / cls.what
        if not (folder / "config.json").is_file():
            raise ChoiError(f"no {cls.what} model in {folder} (expected a folder from `choi train {cls.what}`, "
                            "e.g. RUN/model)")  # fmt: skip
        try:
            # the shipped image model's weights are sharded: no "Loading checkpoint shards" bar on every call;
            # a user's folder keeps diffusers' notices (unexpected or missing weights)
            shipped = folder.resolve().is_relative_to(shipped_weights().resolve())
            with quiet_loading() if shipped else contextlib.nullcontext():
                model = cls.model_class.from_pretrained(folder, torch_dtype=torch_dtype)
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise ChoiError(f"cannot load the {cls.what} model in {folder}: {err}") from err
        model_id = "choi-tiny" if path is None else str(folder)
        return cls(model, text_encoder, model_id, weights_digest(folder), sd_base)

    def to(self, device: str | torch.device) -> Any:
        self.model.to(device)
        self.text_encoder.to(device)
        return self
