"""Helpers every dataset builder shares (HOI-World, HICO-DET images, videos): output folder, workers."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from choi.errors import ChoiError


def init_worker() -> None:
    # Ctrl-C reaches every process of the terminal's group: let the builder alone react to it (it
    # terminates the pool), so that workers don't each print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def describe_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = [k for k in new if old.get(k) != new[k]]
    before = ", ".join(f"{k}={old.get(k)}" for k in keys)
    after = ", ".join(f"{k}={new[k]}" for k in keys)
    return f"was built with {before}; this run asks for {after}"


def make_output_folder(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise ChoiError(f"--out {root} exists and is not a folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ChoiError(f"cannot create --out folder {root}: {err.strerror or err}") from err
    if not os.access(root, os.W_OK | os.X_OK):
        raise ChoiError(f"--out folder {root} is not writable")
