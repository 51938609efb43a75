"""Helpers every dataset builder shares (HOI-World, HICO-DET images, videos): output folder, workers."""

from __future__ import annotations

import signal
from typing import Any


def init_worker() -> None:
    # Ctrl-C reaches every process of the terminal's group: let the builder alone react to it (it
    # terminates the pool), so that workers don't each print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def describe_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = [k for k in new if old.get(k) != new[k]]
    before = ", ".join(f"{k}={old.get(k)}" for k in keys)
    after = ", ".join(f"{k}={new[k]}" for k in keys)
    return f"was built with {before}; this run asks for {after}"
