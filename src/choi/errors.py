"""User-facing errors. The CLI turns a :class:`ChoiError` into one line on stderr and exit code 2."""

from __future__ import annotations

import os
from typing import Any

QUOTE_CHARS = 60  # characters of any user text an error quotes: a 10 MB input must not become a 10 MB message


class ChoiError(Exception):
    """Bad input or arguments: the message says what was wrong and what is allowed."""


def quote(value: Any, limit: int = QUOTE_CHARS, path: bool = False) -> str:
    """At most ``limit`` characters of ``value`` for an error: text in quotes, cut with '...'.

    A ``path`` keeps its end (the file's name says most); anything else shows its start.
    """
    if isinstance(value, os.PathLike):
        value, path = os.fspath(value), True
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = "..." + text[-limit:] if path else text[:limit] + "..."
    return repr(text) if isinstance(value, str) else text
