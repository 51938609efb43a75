"""Keeping the libraries' chatter out of the user's terminal: choi reports what happens itself.

diffusers and transformers print loading progress bars and notices (a sharded checkpoint's "Loading
checkpoint shards" bar on every call); MediaPipe's native code writes TensorFlow Lite and absl log
lines straight to file descriptor 2, below Python. ``choi -v`` (debug logging) keeps both.

Example:
    >>> with quiet_loading():
    ...     unet = UNet2DConditionModel.from_pretrained(folder)
    >>> with quiet_native_stderr():
    ...     result = pose.process(image)
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("choi")
_lock = threading.Lock()
_silenced = 0  # threads inside quiet_native_stderr blocks
_saved_fd: int | None = None  # the real file descriptor 2 while they are


@contextmanager
def quiet_loading() -> Iterator[None]:
    """No loading progress bars or notices from diffusers/transformers; restores the caller's settings."""
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    levels = dlog.get_verbosity(), tlog.get_verbosity()
    bars = dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled()
    dlog.set_verbosity_error(), tlog.set_verbosity_error(), dlog.disable_progress_bar(), tlog.disable_progress_bar()
    try:
        yield
    finally:
        dlog.set_verbosity(levels[0]), tlog.set_verbosity(levels[1])
        dlog.enable_progress_bar() if bars[0] else None
        tlog.enable_progress_bar() if bars[1] else None


@contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """File descriptor 2 goes to /dev/null for the block, unless choi logs at debug level.

    Process-wide: while any thread is inside such a block, every thread's stderr output is dropped, so
    keep it to the native call (MediaPipe's model creation and inference take a fraction of a second).
    Overlapping blocks (the app's handler threads) share one redirection; the last one out restores it.
    """
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    global _silenced, _saved_fd
    with _lock:
        if _silenced == 0:
            sys.stderr.flush()
            _saved_fd = os.dup(2)
            with open(os.devnull, "wb") as null:
                os.dup2(null.fileno(), 2)
        _silenced += 1
    try:
        yield
    finally:
        with _lock:
            _silenced -= 1
            if _silenced == 0:
                os.dup2(_saved_fd, 2)
                os.close(_saved_fd)
                _saved_fd = None
