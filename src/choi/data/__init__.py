"""Datasets: the sample schema, tar shards + manifest, the HOI-World builder and the contact sheet.

Names are imported on first use: the shard reader pulls in torch (via webdataset), and code that
only needs :class:`Sample` (the HOI-World renderer, for one) should not pay for that.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "schema": ("KEYPOINT_NAMES", "SCHEMA_VERSION", "Sample", "decode", "encode", "mask_box"),
    "shards": (
        "Manifest",
        "ShardDataset",
        "ShardInfo",
        "ShardWriter",
        "SplitInfo",
        "iter_samples",
        "iter_shard_records",
        "read_manifest",
        "shard_name",
        "write_manifest",
        "write_shard",
    ),
    "synth": ("SynthConfig", "build_synth"),
    "preview": ("write_contact_sheet",),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'choi.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"choi.data.{_MODULE_OF[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
