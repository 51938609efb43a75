"""The seam between the generic pipeline and a model family: two small protocols and their data.

A family (choi-tiny, choi-sd, ...) gives :class:`~choi.pipelines.choi.CHOIPipeline` a stage-1
component (:class:`MaskStage`: references + interaction + optional background/box → person and
object masks) and a stage-2 component (:class:`ImageStage`: the same plus the masks → images). Both
receive one :class:`StageInputs`, already read and checked, and the family's own options (a frozen
dataclass with defaults, set by the user through one generic mechanism: ``options={...}`` in Python
and jobs, ``--set key=value`` on the command line).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from choi.errors import ChoiError, quote

Callback = Callable[[str, int, int], None]  # (stage "mask" | "image", step, total)


@dataclass
class StageInputs:
    """One request as both stages receive it: references read and segmented, everything checked."""

    human: np.ndarray  # (H, W, 3) uint8: the person reference
    human_silhouette: np.ndarray  # (H, W) bool
    object: np.ndarray  # (H, W, 3) uint8: the object reference
    object_silhouette: np.ndarray  # (H, W) bool
    interaction: str
    seeds: list[int]  # one per image: image k depends on seeds[k] alone
    height: int  # output size: the background's, else the family's default
    width: int
    background: np.ndarray | None = None  # (height, width, 3) uint8
    box: tuple[float, float, float, float] | None = None  # normalised x1, y1, x2, y2

    @property
    def num_images(self) -> int:
        return len(self.seeds)


@dataclass
class Layouts:
    """Stage 1's result: K person/object mask pairs at the output size, and what to record."""

    human_masks: np.ndarray  # (K, H, W) bool
    object_masks: np.ndarray  # (K, H, W) bool
    metadata: dict[str, Any] = field(default_factory=dict)


class MaskStage(Protocol):
    """Stage 1 of a family. ``steps``/``guidance`` ``None`` mean the family's defaults."""

    def __call__(
        self, inputs: StageInputs, steps: int | None, guidance: float | None, options: Any, callback: Callback | None
    ) -> Layouts: ...


class ImageStage(Protocol):
    """Stage 2 of a family: K images (H, W, 3) uint8 at the output size and what to record.

    With a background, every pixel outside the painted region is the background's own.
    """

    default_size: int  # output side when there is no background

    def __call__(
        self,
        inputs: StageInputs,
        layouts: Layouts,
        steps: int | None,
        guidance: float | None,
        options: Any,
        callback: Callback | None,
    ) -> tuple[list[np.ndarray], dict[str, Any]]: ...

    def check_interaction(self, text: str) -> dict[str, Any]:
        """What the family makes of ``text`` (recorded), or a one-line ChoiError when it cannot use it."""
        ...


# --- family options -----------------------------------------------------------------------------


def parse_options(kind: type, values: Mapping[str, Any], family: str) -> Any:
    """``values`` (Python values, or strings from ``--set key=value``) → an instance of the dataclass ``kind``.

    An option ``kind`` does not have is a one-line error naming the ones it has; the dataclass's
    ``__post_init__`` checks the values.
    """
    if not isinstance(values, Mapping):
        raise ChoiError(f"options must be a mapping of names to values, got {type(values).__name__}")
    known = {f.name: f for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ChoiError(
            f"{family} has no option {', '.join(quote(k, 40) for k in unknown[:5])}; "
            f"its options: {', '.join(sorted(known))}"
        )
    hints = typing.get_type_hints(kind)
    return kind(**{k: _convert(k, v, hints[k]) for k, v in values.items()})


def parse_set(items: list[str] | None) -> dict[str, str]:
    """``["key=value", ...]`` from ``--set`` → a dict (values stay strings; :func:`parse_options` converts)."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ChoiError(f"--set takes key=value, got {quote(item)}")
        out[key.strip()] = value.strip()
    return out


def _convert(name: str, value: Any, hint: Any) -> Any:
    """A string from the command line → the option's type; other values pass through for the dataclass to check
    (numpy scalars as the Python numbers they hold)."""
    if isinstance(value, np.generic):
        return value.item()
    if not isinstance(value, str):
        return value
    kinds = [a for a in typing.get_args(hint) if a is not type(None)] if _is_union(hint) else [hint]
    if value.lower() in ("none", "default", "") and type(None) in typing.get_args(hint):
        return None
    kind = typing.get_origin(kinds[0]) or kinds[0]
    try:
        if kind is bool:
            if value.lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise ValueError
            return value.lower() in ("true", "1", "yes", "on")
        if kind is tuple:
            return tuple(float(v) for v in value.split(","))
        if kind in (int, float):
            number = float(value)
            return int(number) if kind is int and number.is_integer() else number
    except ValueError:
        raise ChoiError(f"option {name}: cannot read {quote(value)} as {getattr(kind, '__name__', kind)}") from None
    return value


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def check_number(name: str, value: Any, low: float, high: float, integer: bool = False) -> None:
    """A finite number (a whole one with ``integer``) in [low, high], or a one-line ChoiError."""
    ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok_type or not (low <= value <= high):  # NaN fails the range test
        kind, bounds = ("a whole number", f"{low:d}, {high:d}") if integer else ("a number", f"{low:g}, {high:g}")
        raise ChoiError(f"{name} must be {kind} in [{bounds}], got {quote(value, 30)}")
