"""A stand-in for CHOIPipeline with the same interface: instant, deterministic, and it records its calls.

Used by the CLI and app tests, which test the plumbing (inputs, outputs, errors, batches), not the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from choi.io import atomic_write_bytes, png_bytes
from choi.pipelines.mask import mask_preview, parse_box
from choi.vocabulary import resolve

SIZE = 64


def _masks(num: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    human = np.zeros((num, h, w), bool)
    obj = np.zeros((num, h, w), bool)
    human[:, h // 4 : 3 * h // 4, w // 4 : w // 2] = True
    obj[:, h // 2 : 3 * h // 4, w // 2 : 3 * w // 4] = True
    return human, obj


@dataclass
class FakeMaskOutput:
    human_masks: np.ndarray
    object_masks: np.ndarray
    metadata: dict[str, Any]
    background: np.ndarray | None = None

    def preview(self, k: int) -> np.ndarray:
        return mask_preview(self.human_masks[k], self.object_masks[k], self.background)


@dataclass
class FakeOutput:
    images: list[np.ndarray]
    human_masks: np.ndarray
    object_masks: np.ndarray
    metadata: dict[str, Any]

    def mask_preview(self, k: int) -> np.ndarray:
        return mask_preview(self.human_masks[k], self.object_masks[k])

    def save(self, out_dir, inputs=None) -> list[Path]:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for k, image in enumerate(self.images):
            for name, array in (
                (f"image_{k}.png", image),
                (f"mask_{k}_human.png", self.human_masks[k].astype(np.uint8) * 255),
                (f"mask_{k}_object.png", self.object_masks[k].astype(np.uint8) * 255),
                (f"mask_{k}_preview.png", self.mask_preview(k)),
            ):
                atomic_write_bytes(out / name, png_bytes(array))
                written.append(out / name)
        record = {"inputs": inputs or {}, **self.metadata}
        atomic_write_bytes(out / "choi.json", json.dumps(record, default=str).encode())
        return [*written, out / "choi.json"]


class FakePipeline:
    """``fail_on``: an interaction text that raises RuntimeError (a model failure mid-batch)."""

    def __init__(self, fail_on: str | None = None):
        self.calls: list[dict[str, Any]] = []
        self.fail_on = fail_on

    def _common(self, kwargs: dict[str, Any]) -> tuple[int, list[int], int, int]:
        resolve(kwargs["interaction"])
        if kwargs.get("box") is not None:
            parse_box(kwargs["box"])
        if kwargs["interaction"] == self.fail_on:
            raise RuntimeError("simulated model failure\nsecond line")
        num = kwargs.get("num_images") or 1
        base = kwargs.get("seed")
        seeds = [(1234 if base is None else base) + k for k in range(num)]
        bg = kwargs.get("background")
        h, w = (np.asarray(bg).shape[:2]) if bg is not None else (SIZE, SIZE)
        callback = kwargs.get("callback")
        if callback is not None:
            for step in range(1, 3):
                callback("mask", step, 2)
        return num, seeds, h, w

    def generate_masks(self, **kwargs) -> FakeMaskOutput:
        self.calls.append({"method": "generate_masks", **kwargs})
        num, seeds, h, w = self._common(kwargs)
        human, obj = _masks(num, h, w)
        bg = kwargs.get("background")
        return FakeMaskOutput(human, obj, {"seeds": seeds}, None if bg is None else np.asarray(bg)[..., :3])

    def __call__(self, **kwargs) -> FakeOutput:
        self.calls.append({"method": "__call__", **kwargs})
        num, seeds, h, w = self._common(kwargs)
        mask = kwargs.get("mask")
        if mask is not None:
            if isinstance(mask, np.ndarray):  # a colour-coded preview: red person, blue object
                mask = (mask[..., 0] > 150) & (mask[..., 2] < 100), (mask[..., 2] > 150) & (mask[..., 0] < 100)
            human, obj = (np.repeat(np.asarray(m)[None], num, 0) for m in mask)
            h, w = human.shape[1:]
        else:
            human, obj = _masks(num, h, w)
        images = [np.asarray(Image.new("RGB", (w, h), (s % 256, 100, 50))) for s in seeds]
        return FakeOutput(images, human, obj, {"seeds": seeds, "model": {"id": "fake"}})
