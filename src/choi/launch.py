"""How this process was started: alone, or as one of several by ``torchrun`` / ``accelerate launch``.

Read from the environment those launchers set, so asking imports nothing (a one-process command
never pays for ``torch.distributed``).
"""

from __future__ import annotations

import os


def process_count() -> int:
    """How many processes the launcher started (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Rank 0, or the only process."""
    return os.environ.get("RANK", "0") == "0"


def cpu_processes() -> bool:
    """Several processes on a machine without CUDA. accelerate joins them into one gloo run only when told
    it is on CPU (``cpu=True``); otherwise each runs alone, unaware of the others."""
    if process_count() <= 1:
        return False
    import torch

    return not torch.cuda.is_available()
