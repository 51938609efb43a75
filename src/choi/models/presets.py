"""Named presets of a model: overrides on top of its ``__init__`` defaults, DiT-style.

A model's ``__init__`` (registered with diffusers' ``register_to_config``) is the one list of its
parameters and their defaults; a preset names only what differs from them.

Example:
    >>> MaskGenerator.preset_config("small")["patch_size"]
    2
    >>> model = MaskGenerator.from_preset("tiny", sample_size=96)
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, ClassVar

from choi.errors import ChoiError


class PresetMixin:
    """``from_preset(name, **overrides)`` for a model class that sets ``presets`` and ``preset_kind``."""

    presets: ClassVar[Mapping[str, Mapping[str, Any]]]
    preset_kind: ClassVar[str]  # "mask", "image": names the model in error messages

    @classmethod
    def init_defaults(cls) -> dict[str, Any]:
        params = inspect.signature(cls.__init__).parameters  # follows register_to_config's wrapper
        return {k: p.default for k, p in params.items() if k != "self" and p.default is not inspect.Parameter.empty}

    @classmethod
    def preset_config(cls, name: str, **overrides: Any) -> dict[str, Any]:
        """Every ``__init__`` argument: its default, then preset ``name``'s value, then ``overrides``."""
        if name not in cls.presets:
            raise ChoiError(f"unknown {cls.preset_kind} model config '{name}'; choose from {', '.join(cls.presets)}")
        defaults = cls.init_defaults()
        unknown = sorted(set(overrides) - set(defaults))
        if unknown:
            raise ChoiError(f"{cls.__name__} has no parameter {', '.join(unknown)}; known: {', '.join(defaults)}")
        return {**defaults, **cls.presets[name], **overrides}

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> Any:
        """A randomly initialised model of preset ``name`` with ``overrides``."""
        return cls(**cls.preset_config(name, **overrides))
