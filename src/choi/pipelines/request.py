"""One generation request, validated in one place with one set of limits.

The Python API (``pipe(**fields)``), the CLI (one flag per field), the jobs file (one JSON object per
line, the same field names) and the app all build a :class:`GenerationRequest`.

Example:
    >>> req = GenerationRequest(human="me.png", object="bike.png", interaction="ride bicycle", seed=0)
    >>> req = GenerationRequest.from_dict(json.loads(line), base=Path("jobs/"))  # a jobs line
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from choi.data.segment import Box, parse_box
from choi.errors import ChoiError, quote
from choi.pipelines.stages import check_number

if TYPE_CHECKING:
    from choi.pipelines.inputs import ImageInput

# One set of limits for every front end. This module imports neither torch nor diffusers, so a request
# is checked (and a bad one refused) before a front end pays for loading them.
MAX_SEED = 2**63  # seeds are in [0, MAX_SEED): what torch.Generator.manual_seed accepts
MAX_IMAGES = 16  # per request: the candidates share memory, more is almost certainly a typo
MAX_STEPS = 1000
MAX_GUIDANCE = 50.0  # far beyond any useful scale; infinite or huge values only give black images
MAX_INTERACTION_CHARS = 300
# Outputs take the background's size up to this longer side (a 4K screen); a larger background is scaled
# down, logged and recorded. Raise it per request with max_output_side, up to MAX_OUTPUT_SIDE_LIMIT.
MAX_OUTPUT_SIDE = 4096
MAX_OUTPUT_SIDE_LIMIT = 8192  # 64 MP of output: beyond what any stage-2 model paints
INT_FIELDS = ("seed", "num_images", "mask_steps", "steps", "max_output_side")
IMAGE_FIELDS = ("human", "object", "background", "mask", "human_mask", "object_mask")
PATH_FIELDS = (*IMAGE_FIELDS, "sam_checkpoint")
BOX_FIELDS = ("box", "object_box")
NUMBER_FIELDS = (*INT_FIELDS, "mask_guidance", "guidance")


@dataclass(frozen=True)
class GenerationRequest:
    """A person, an object, an interaction, and how to draw them.

    Images are paths (recorded in ``choi.json`` as given), arrays or PIL images. ``mask`` is a layout
    (colour-coded: red person, blue object; or a (human, object) pair of arrays) that skips stage 1.
    ``human_mask``/``object_mask`` give a reference's silhouette instead of segmenting it;
    ``object_box`` points at the object in its photo; ``sam_checkpoint`` segments it with SAM. Sampler
    settings are per stage: ``mask_steps``/``mask_guidance`` for stage 1, ``steps``/``guidance`` for
    stage 2; ``None`` means the model's default. ``options`` are the loaded model family's own.
    ``seed`` gives image k the seed ``seed + k`` (random when ``None``, recorded). The output has the
    background's (or the layout's) size, scaled down to ``max_output_side`` on its longer side.
    """

    human: ImageInput
    object: ImageInput
    interaction: str
    background: ImageInput | None = None
    box: Box | str | None = None
    mask: Any = None
    human_mask: ImageInput | None = None
    object_mask: ImageInput | None = None
    object_box: Box | str | None = None
    sam_checkpoint: str | os.PathLike | None = None
    seed: int | None = None
    num_images: int = 1
    mask_steps: int | None = None
    mask_guidance: float | None = None
    steps: int | None = None
    guidance: float | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    max_output_side: int = MAX_OUTPUT_SIDE

    def __post_init__(self) -> None:
        for name in ("human", "object"):
            if getattr(self, name) is None or (isinstance(getattr(self, name), str) and not getattr(self, name)):
                raise ChoiError(f"give the {name} reference image")
        text = self.interaction
        if not isinstance(text, str) or not text.strip():
            raise ChoiError("give the interaction, e.g. 'ride bicycle' or 'a person kicking a ball'")
        if len(text) > MAX_INTERACTION_CHARS:
            raise ChoiError(
                f"the interaction is {len(text)} characters long ({quote(text)}); at most {MAX_INTERACTION_CHARS}"
            )
        for name in BOX_FIELDS:
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, parse_box(value, name.replace("_", " ")))
        for name in NUMBER_FIELDS:  # a caller's numpy scalars (an np.int64 seed) are numbers too, kept as Python's
            if isinstance(getattr(self, name), np.generic):
                object.__setattr__(self, name, getattr(self, name).item())
        check_number("num_images", self.num_images, 1, MAX_IMAGES, integer=True)
        if self.seed is not None:  # image k gets seed + k: every one of them must be a valid seed
            check_number("seed", self.seed, 0, MAX_SEED - self.num_images, integer=True)
        check_number("max_output_side", self.max_output_side, 64, MAX_OUTPUT_SIDE_LIMIT, integer=True)
        for name in ("mask_steps", "steps"):
            if getattr(self, name) is not None:
                check_number(name, getattr(self, name), 1, MAX_STEPS, integer=True)
        for name in ("mask_guidance", "guidance"):
            if getattr(self, name) is not None:
                check_number(name, getattr(self, name), 0, MAX_GUIDANCE)
        if not isinstance(self.options, Mapping) or not all(isinstance(k, str) for k in self.options):
            raise ChoiError(f"options must map option names to values, got {quote(self.options)}")
        object.__setattr__(self, "seed", None if self.seed is None else int(self.seed))

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], base: str | os.PathLike | None = None) -> GenerationRequest:
        """From a jobs line or the CLI's options (JSON types): unknown keys and wrong types raise ChoiError.

        Relative image paths are taken relative to ``base`` (a jobs file's folder).
        """
        known = cls.fields()
        unknown = sorted(set(values) - set(known))
        if unknown:
            moved = {"fit_object", "prior_strength", "layout_candidates", "zoom"} & set(unknown)
            hint = f' ({", ".join(sorted(moved))}: a model option now, set it in "options")' if moved else ""
            run_wide = {"model", "device", "dtype", "out"} & set(unknown)
            hint += f" ({', '.join(sorted(run_wide))}: set for the whole batch on the command line)" if run_wide else ""
            raise ChoiError(
                f"unknown key(s) {', '.join(quote(k, 40) for k in unknown[:5])}{hint}; allowed: {', '.join(known)}"
            )
        out: dict[str, Any] = {}
        for key, value in values.items():
            if value is None:
                continue
            if key in PATH_FIELDS:
                text = _typed(key, value, str)
                value = str(Path(base) / text) if base is not None and not Path(text).is_absolute() else text
            elif key == "interaction":
                value = _typed(key, value, str)
            elif key in BOX_FIELDS:
                value = value if isinstance(value, list | tuple) else _typed(key, value, str)
            elif key in INT_FIELDS:  # JSON's 2.5 or 2.0 is not silently an image count
                value = _typed(key, value, int)
            elif key in ("mask_guidance", "guidance"):
                value = float(_typed(key, value, (int, float)))
            elif key == "options":
                value = dict(_typed(key, value, dict))
            out[key] = value
        for key in ("human", "object", "interaction"):
            if key not in out:
                raise ChoiError(f"missing {key!r}: every request needs human, object and interaction")
        return cls(**out)

    def record(self) -> dict[str, Any]:
        """The request as written in ``choi.json``: paths as given, arrays described, defaults left out."""
        out: dict[str, Any] = {}
        for name in self.fields():
            value = getattr(self, name)
            if value is None or (name == "options" and not value):
                continue
            if name in IMAGE_FIELDS and not isinstance(value, str | os.PathLike):
                value = f"<{type(value).__name__}>" if not isinstance(value, np.ndarray) else f"<array {value.shape}>"
            elif isinstance(value, os.PathLike):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            elif name == "options":
                value = {k: (list(v) if isinstance(v, tuple) else v) for k, v in value.items()}
            out[name] = value
        return out


def _typed(key: str, value: Any, kind: type | tuple[type, ...]) -> Any:
    # bool is an int in Python; "seed": true is a mistake, not seed 1.
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ChoiError(f"{quote(key)} must be a {names}, got {quote(value)}")
    return value
